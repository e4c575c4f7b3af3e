"""The ``environment`` stage: the project's environment, from the cache or built now (its log
is uv's), before any stage runs the project's commands; and which sandbox they run in."""

from __future__ import annotations

import time

from workers import sandbox
from workers.environments import EnvironmentBuildError, ensure
from workers.steps import StepContext, StepError, StepResult


def environment(ctx: StepContext) -> StepResult:
    ctx.say(sandbox.describe())
    started = time.monotonic()
    try:
        env = ensure(
            ctx.settings.home, ctx.project.environment, ctx.worktree, ctx.log, limits=ctx.project.sandbox
        )
    except EnvironmentBuildError as exc:
        raise StepError(str(exc)) from exc
    seconds = time.monotonic() - started
    ctx.say(f"environment: {env.describe()} ({seconds:.2f}s)")
    return StepResult(
        detail={
            "hash": env.key,
            "kind": env.kind,
            "python": env.python,
            "source": env.source,
            "prefix": str(env.prefix) if env.prefix else None,
            "sandbox": sandbox.mode(),
            "seconds": round(seconds, 3),
        }
    )
