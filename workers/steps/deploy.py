"""The deploy stage and its canary trial (the approval wait before it: ``approval.py``)."""

from __future__ import annotations

import time
from typing import Any

from pipelines.canary import Verdict, judge
from store import aliases, telemetry
from store import releases as states
from store.models import Deployment
from workers import releases, serving
from workers.projects import mirror
from workers.steps import StepContext, StepError, StepResult
from workers.steps.approval import check_approval
from workers.steps.commands import run_project
from workers.steps.release import ModelRef, model_for_run

#: Seconds between two looks at the canary's numbers, and between two progress lines.
POLL_SECONDS, REPORT_SECONDS = 0.5, 5.0


def deploy(ctx: StepContext) -> StepResult:
    model = model_for_run(ctx)
    if model is None:
        raise StepError("no registered model to deploy")
    check_approval(ctx, model)
    if ctx.project.deploy.target == "command":
        return _deploy_command(ctx, model)
    directory = releases.release_dir(ctx.settings, model.name, model.version, f"run{ctx.run_id}")
    mirror(ctx.settings, ctx.repo).export(ctx.commit, directory)
    ctx.say(f"starting {model.name} v{model.version} from {directory}")
    try:
        server = releases.start(ctx.settings, directory, artifact=model.artifact_path, sha256=model.sha256)
    except (serving.ServeError, states.ReleaseError) as exc:
        raise StepError(f"release did not start: {exc}") from exc
    ctx.say(f"healthy at {server.url}")
    dep = Deployment(
        model_name=model.name,
        version=model.version,
        run_id=ctx.run_id,
        target="local",
        url=server.url,
        pid=server.pid,
        release_dir=str(directory),
    )
    percent, actor = ctx.project.deploy.canary_percent, f"run:{ctx.run_id}"
    try:
        with ctx.db.session() as s:
            if percent and "active" in states.live(s, model.name):
                states.begin_canary(s, dep, percent)
                aliases.move(s, model.name, "staging", model.version, actor=actor, reason="canary started")
            else:
                states.promote(s, dep, actor=actor, reason="deployed" if percent else "deployed (no canary)")
    except states.ReleaseError as exc:
        serving.stop(server.pid)
        raise StepError(str(exc)) from exc
    detail: dict[str, Any] = {
        "model": model.name,
        "version": model.version,
        "url": server.url,
        "release": dep.id,
    }
    if dep.status == "canary":
        ctx.say(
            f"canary: release #{dep.id} gets {percent}% of /serve/{model.name}/ for up to "
            f"{ctx.project.deploy.canary_window_seconds:g}s"
        )
        return _trial(ctx, dep.id, detail)
    ctx.say(
        f"release #{dep.id} serves 100% of /serve/{model.name}/"
        + (" (no release to compare with)" if percent else "")
    )
    releases.reap(ctx.db)
    return StepResult(detail=detail)


def _trial(ctx: StepContext, dep_id: int, detail: dict[str, Any]) -> StepResult:
    """Watch the canary until its verdict (or a human's promote or rollback), then act on it."""
    config = ctx.project.deploy
    started = reported = time.monotonic()
    while True:
        with ctx.db.session() as s:
            dep = s.get(Deployment, dep_id)
            assert dep is not None
            stable = states.live(s, dep.model_name).get("active")
            ids = [dep_id] + ([stable.id] if stable else [])
            numbers = telemetry.stats(s, ids)
            status = dep.status
            if status == "canary":
                canary = numbers[dep_id]
                verdict = judge(
                    config,
                    requests=canary.requests,
                    errors=canary.errors,
                    p99_ms=canary.quantile_ms(0.99),
                    elapsed=time.monotonic() - started,
                )
                if verdict.decision == "promote":
                    states.promote(s, dep, actor="canary:auto", reason=verdict.reason)
                elif verdict.decision == "rollback":
                    states.abort_canary(s, dep)
        detail["telemetry"] = {("canary" if i == dep_id else "stable"): numbers[i].to_dict() for i in ids}
        if status != "canary":  # a human promoted or rolled it back meanwhile
            verdict = Verdict(
                "promote" if status == "active" else "rollback", f"by hand (release is {status})"
            )
        elif verdict.decision == "wait":
            if time.monotonic() - reported >= REPORT_SECONDS:
                reported = time.monotonic()
                p99 = numbers[dep_id].quantile_ms(0.99)
                ctx.say(f"canary: {verdict.reason}, p99 {'n/a' if p99 is None else f'{p99:.0f} ms'}")
            time.sleep(POLL_SECONDS)
            continue
        releases.reap(ctx.db)
        detail["verdict"] = verdict.decision
        if verdict.decision == "promote":
            ctx.say(f"canary promoted: {verdict.reason}")
            return StepResult(detail=detail | {"reason": verdict.reason})
        ctx.say(f"canary rolled back: {verdict.reason}; the previous release serves 100% again")
        return StepResult(
            status="failed", exit_code=1, detail=detail | {"error": f"canary rolled back: {verdict.reason}"}
        )


def _deploy_command(ctx: StepContext, model: ModelRef) -> StepResult:
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
        dep = Deployment(model_name=model.name, version=model.version, run_id=ctx.run_id, target="command")
        states.promote(s, dep, actor=f"run:{ctx.run_id}", reason="deploy command succeeded")
    return StepResult(detail={"model": model.name, "version": model.version, "target": "command"})
