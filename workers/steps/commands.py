"""Test stages: the project's own commands, run in the run's worktree."""

from __future__ import annotations

from store import aliases
from workers import serving
from workers.process import run_logged
from workers.steps import StepContext, StepError, StepResult
from workers.steps.release import model_for_run

TEST_TIMEOUT = 1800.0


def _command(ctx: StepContext, stage: str, env: dict[str, str] | None = None) -> StepResult:
    code = run_logged(
        ctx.project.stages[stage],
        cwd=ctx.worktree,
        log=ctx.log,
        timeout=min(ctx.settings.stage_timeout, TEST_TIMEOUT),
        env=env,
    )
    return StepResult(status="succeeded" if code == 0 else "failed", exit_code=code)


def unit_tests(ctx: StepContext) -> StepResult:
    return _command(ctx, "unit_tests")


def integration_tests(ctx: StepContext) -> StepResult:
    """Serve the candidate (this commit's app with the run's model) and test it over HTTP."""
    model = model_for_run(ctx)
    if model is None:
        raise StepError("no model to test: nothing registered yet; push training code or data first")
    ctx.say(f"serving {model.name} v{model.version} from the worktree for the tests")
    try:
        server = serving.start(
            cwd=ctx.worktree,
            command=ctx.project.deploy.command,
            model_path=model.artifact_path,
            sha256=model.sha256,
            log_file=ctx.worktree.parent / f"{ctx.run_id}-candidate.log",
            health_path=ctx.project.deploy.health_path,
        )
    except serving.ServeError as exc:
        raise StepError(f"candidate did not start: {exc}") from exc
    try:
        ctx.say(f"candidate at {server.url}")
        result = _command(
            ctx,
            "integration_tests",
            {"LOOPLINE_SERVE_URL": server.url, "LOOPLINE_MODEL_SHA256": model.sha256},
        )
    finally:
        serving.stop(server.pid)
    if result.status == "succeeded":
        reason = "integration tests passed"
        aliases.set_alias(
            ctx.db, model.name, "staging", model.version, actor=f"run:{ctx.run_id}", reason=reason
        )
    return result
