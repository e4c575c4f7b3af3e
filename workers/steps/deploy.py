"""The deploy stage (the approval wait before it: ``approval.py``)."""

from __future__ import annotations

from sqlalchemy import select

from store.models import Deployment
from workers import serving
from workers.process import run_logged
from workers.projects import mirror
from workers.steps import StepContext, StepError, StepResult
from workers.steps.approval import check_approval
from workers.steps.release import model_for_run


def deploy(ctx: StepContext) -> StepResult:
    model = model_for_run(ctx)
    if model is None:
        raise StepError("no registered model to deploy")
    check_approval(ctx, model)
    config = ctx.project.deploy
    release_dir = ctx.settings.home / "releases" / model.name / f"v{model.version}-run{ctx.run_id}"
    if config.target == "command":
        if not config.command:
            raise StepError("stages.deploy.command is required for target 'command'")
        code = run_logged(
            config.command,
            cwd=ctx.worktree,
            log=ctx.log,
            timeout=ctx.settings.stage_timeout,
            env={
                "LOOPLINE_MODEL_NAME": model.name,
                "LOOPLINE_MODEL_VERSION": str(model.version),
                "LOOPLINE_MODEL_PATH": str(model.artifact_path),
                "LOOPLINE_MODEL_SHA256": model.sha256,
                "LOOPLINE_COMMIT": ctx.commit,
            },
        )
        if code != 0:
            return StepResult(status="failed", exit_code=code)
        _activate(ctx, model.name, model.version, "command", url=None, pid=None, release_dir=None)
        return StepResult(detail={"model": model.name, "version": model.version, "target": "command"})

    mirror(ctx.settings, ctx.repo).export(ctx.commit, release_dir)
    ctx.say(f"starting {model.name} v{model.version} from {release_dir}")
    try:
        server = serving.start(
            cwd=release_dir,
            command=config.command,
            model_path=model.artifact_path,
            sha256=model.sha256,
            log_file=release_dir / "server.log",
            health_path=config.health_path,
        )
    except serving.ServeError as exc:
        raise StepError(f"release did not start: {exc}") from exc
    ctx.say(f"healthy at {server.url}")
    _activate(
        ctx, model.name, model.version, "local", url=server.url, pid=server.pid, release_dir=str(release_dir)
    )
    return StepResult(detail={"model": model.name, "version": model.version, "url": server.url})


def _activate(
    ctx: StepContext,
    name: str,
    version: int,
    target: str,
    *,
    url: str | None,
    pid: int | None,
    release_dir: str | None,
) -> None:
    """Record the new release as active, then retire (and stop) the one it replaces."""
    with ctx.db.session() as s:
        previous = list(
            s.scalars(select(Deployment).where(Deployment.model_name == name, Deployment.status == "active"))
        )
        s.add(
            Deployment(
                model_name=name,
                version=version,
                run_id=ctx.run_id,
                target=target,
                url=url,
                pid=pid,
                release_dir=release_dir,
                status="active",
            )
        )
        for old in previous:
            old.status = "retired"
    for old in previous:
        if old.pid:
            ctx.say(f"stopping the previous release v{old.version} (pid {old.pid})")
            serving.stop(old.pid)
