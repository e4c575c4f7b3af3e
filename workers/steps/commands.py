"""The project's own commands, each in the sandbox with the project's environment (every
step runs them through :func:`run_project`); the test stages."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from store import aliases
from workers import serving
from workers.environments import EnvironmentBuildError, box_for
from workers.process import run_logged
from workers.sandbox import Box
from workers.steps import StepContext, StepError, StepResult
from workers.steps.release import model_for_run

TEST_TIMEOUT = 1800.0


def run_project(
    ctx: StepContext,
    command: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    read: tuple[Path, ...] = (),
    write: tuple[Path, ...] = (),
    timeout: float | None = None,
    network: bool | None = None,
) -> int:
    """Run one of the project's commands in its sandbox: the worktree (and ``write``) writable,
    ``read`` read-only, the repository's mapped secrets in its environment and masked in the
    log; its exit status."""
    secrets = dict(ctx.settings.pipeline_secrets.get(ctx.repo.name, {}))
    box = project_box(ctx, read=read, write=write, network=network)
    return run_logged(
        command,
        cwd=cwd or ctx.worktree,
        log=ctx.log,
        timeout=timeout or ctx.settings.stage_timeout,
        env={**secrets, **(env or {})},
        box=box,
        mask=secrets.values(),
    )


def project_box(
    ctx: StepContext,
    *,
    read: tuple[Path, ...] = (),
    write: tuple[Path, ...] = (),
    network: bool | None = None,
) -> Box:
    """The sandbox for the run's project commands, its environment ready (built if missing)."""
    try:
        return box_for(
            ctx.settings.home, ctx.project, ctx.worktree, ctx.log, read=read, write=write, network=network
        )
    except EnvironmentBuildError as exc:
        raise StepError(str(exc)) from exc


def _command(
    ctx: StepContext, stage: str, env: dict[str, str] | None = None, *, network: bool | None = None
) -> StepResult:
    code = run_project(
        ctx,
        ctx.project.stages[stage],
        env=env,
        timeout=min(ctx.settings.stage_timeout, TEST_TIMEOUT),
        network=network,
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
            box=project_box(ctx, network=True),
        )
    except serving.ServeError as exc:
        raise StepError(f"candidate did not start: {exc}") from exc
    try:
        ctx.say(f"candidate at {server.url}")
        result = _command(
            ctx,
            "integration_tests",
            {"LOOPLINE_SERVE_URL": server.url, "LOOPLINE_MODEL_SHA256": model.sha256},
            network=True,  # the candidate is reached on 127.0.0.1, whatever sandbox.network says
        )
    finally:
        serving.stop(server.pid)
    if result.status == "succeeded":
        reason = "integration tests passed"
        aliases.set_alias(
            ctx.db, model.name, "staging", model.version, actor=f"run:{ctx.run_id}", reason=reason
        )
    return result
