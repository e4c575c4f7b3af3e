"""Target ``command``: the project's own deploy command ships the model; its exit status decides."""

from __future__ import annotations

from store import aliases
from store import releases as states
from workers.steps import StepContext, StepError, StepResult
from workers.steps.commands import run_project
from workers.steps.release import ModelRef


def deploy(ctx: StepContext, model: ModelRef) -> StepResult:
    """Run the project's deploy command with the release in its environment; its exit status decides."""
    command = ctx.project.deploy.command
    if not command:
        raise StepError("stages.deploy.command is required for target 'command'")
    with ctx.db.session() as s:
        previous = aliases.version_of(s, model.name, "production")
    code = run_project(
        ctx,
        command,
        read=(model.artifact_path,),
        env={
            "LOOPLINE_MODEL_NAME": model.name,
            "LOOPLINE_MODEL_VERSION": str(model.version),
            "LOOPLINE_MODEL_PATH": str(model.artifact_path),
            "LOOPLINE_MODEL_SHA256": model.sha256,
            "LOOPLINE_COMMIT": ctx.commit,
            "LOOPLINE_PREVIOUS_VERSION": "" if previous is None else str(previous),
        },
    )
    if code != 0:
        ctx.say(f"deploy command exited with {code}: production is unchanged")
        return StepResult(status="failed", exit_code=code)
    with ctx.db.session() as s:
        dep = states.new(model=model.name, version=model.version, run_id=ctx.run_id, target="command")
        states.promote(s, dep, actor=f"run:{ctx.run_id}", reason="deploy command succeeded")
    return StepResult(detail={"model": model.name, "version": model.version, "target": "command"})
