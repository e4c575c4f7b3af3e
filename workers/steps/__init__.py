"""Plain step functions, one per stage: ``step(ctx) -> StepResult``; no Celery in here.

The runner builds the context, calls the step and records what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from config.settings import Settings
from pipelines.config import RepoConfig
from pipelines.errors import LooplineError
from pipelines.events import DataObject
from pipelines.project import ProjectConfig
from store.db import Database


class StepError(LooplineError, RuntimeError):
    """A step cannot go on; the message is the stage's verdict."""


@dataclass
class StepContext:
    settings: Settings
    db: Database
    run_id: int
    repo: RepoConfig
    project: ProjectConfig
    worktree: Path
    commit: str
    ref: str | None
    log: IO[bytes]
    objects: list[DataObject] = field(default_factory=list)
    classification: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.log.write(f"[loopline] {line}\n".encode())
        self.log.flush()


@dataclass
class StepResult:
    status: str = "succeeded"  # succeeded | failed | gate_failed | awaiting_approval
    exit_code: int | None = 0
    detail: dict[str, Any] | None = None


Step = Callable[[StepContext], StepResult]


def registry() -> dict[str, Step]:
    from workers.steps import approval, commands, data, deploy, environment, gate, ml

    return {
        "environment": environment.environment,
        "validate_data": data.validate_data,
        "unit_tests": commands.unit_tests,
        "retrain": ml.retrain,
        "evaluate": gate.evaluate,
        "register": ml.register,
        "integration_tests": commands.integration_tests,
        "approval": approval.approval,
        "deploy": deploy.deploy,
    }
