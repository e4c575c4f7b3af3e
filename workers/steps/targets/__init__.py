"""Deploy targets: each is one module with ``deploy(ctx, model)`` plus one entry in :func:`targets`.

The names are declared once, in ``pipelines.project.DEPLOY_TARGETS`` (what ``loopline.yml`` may
say); tests/test_architecture.py checks this registry names the same ones.
"""

from __future__ import annotations

from typing import Protocol

from workers.steps import StepContext, StepResult
from workers.steps.release import ModelRef


class Target(Protocol):
    def __call__(self, ctx: StepContext, model: ModelRef, /) -> StepResult:
        """Ship ``model`` (approved, registered) for the run; the result is the deploy stage's."""
        ...


def targets() -> dict[str, Target]:
    from workers.steps.targets import command, local

    return {"local": local.deploy, "command": command.deploy}
