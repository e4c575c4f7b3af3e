"""Target ``local``: the release runs as its own process here, behind the gateway, on a canary
trial against the release it replaces."""

from __future__ import annotations

import time
from typing import Any

from pipelines.canary import Verdict, judge
from store import aliases, telemetry
from store import releases as states
from workers import artifacts, releases, serving
from workers.projects import mirror
from workers.steps import StepContext, StepError, StepResult
from workers.steps.release import ModelRef

#: Seconds between two looks at the canary's numbers, and between two progress lines.
POLL_SECONDS, REPORT_SECONDS, SAMPLE_SECONDS = 0.5, 5.0, 1.0


def deploy(ctx: StepContext, model: ModelRef) -> StepResult:
    """Start the release, then promote it at once or put it on trial."""
    directory = releases.release_dir(ctx.settings, model.name, model.version, f"run{ctx.run_id}")
    mirror(ctx.settings, ctx.repo).export(ctx.commit, directory)
    bundle = artifacts.pack(ctx.settings, directory)  # another serving host can start it again
    ctx.say(f"starting {model.name} v{model.version} from {directory}")
    try:
        server = releases.start(
            ctx.settings,
            directory,
            artifact=model.artifact_path,
            sha256=model.sha256,
            address=ctx.settings.serving_address,
        )
    except (serving.ServeError, states.ReleaseError) as exc:
        raise StepError(f"release did not start: {exc}") from exc
    ctx.say(f"healthy at {server.url}")
    dep = states.new(
        model=model.name,
        version=model.version,
        run_id=ctx.run_id,
        target="local",
        url=server.url,
        pid=server.pid,
        release_dir=str(directory),
        host=ctx.settings.host,
        bundle_sha256=bundle,
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
        return trial(ctx, dep.id, detail)
    ctx.say(
        f"release #{dep.id} serves 100% of /serve/{model.name}/"
        + (" (no release to compare with)" if percent else "")
    )
    releases.reap(ctx.db, ctx.settings)
    return StepResult(detail=detail)


def trial(ctx: StepContext, dep_id: int, detail: dict[str, Any]) -> StepResult:
    """Watch the canary until its verdict (or a human's promote or rollback), then act on it."""
    config = ctx.project.deploy
    started = reported = time.monotonic()
    series: list[dict[str, Any]] = []  # the trial as charts: a look per SAMPLE_SECONDS
    baseline: dict[int, telemetry.ReleaseStats] = {}
    detail["limits"] = {"max_error_rate": config.max_error_rate, "max_p99_ms": config.max_p99_ms}
    while True:
        with ctx.db.session() as s:
            dep = states.get(s, dep_id)
            assert dep is not None
            stable = states.live(s, dep.model_name).get("active")
            ids = [dep_id] + ([stable.id] if stable else [])
            numbers = telemetry.stats(s, ids)
            status, cut_short = dep.status, (dep.moved or "").startswith(states.INTERRUPTED)
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
        elapsed = time.monotonic() - started
        if stable and stable.id != dep_id and (not series or elapsed - series[-1]["t"] >= SAMPLE_SECONDS):
            before = baseline.setdefault(stable.id, numbers[stable.id])
            series.append(telemetry.trial_point(elapsed, numbers[dep_id], numbers[stable.id].minus(before)))
            detail["series"] = series
        if status != "canary":  # a human promoted or rolled it back meanwhile, or its trial was cut short
            why = dep.moved if cut_short and dep.moved else f"by hand (release is {status})"
            verdict = Verdict("promote" if status == "active" else "rollback", why)
        elif verdict.decision == "wait":
            if time.monotonic() - reported >= REPORT_SECONDS:
                reported = time.monotonic()
                p99 = numbers[dep_id].quantile_ms(0.99)
                ctx.say(f"canary: {verdict.reason}, p99 {'n/a' if p99 is None else f'{p99:.0f} ms'}")
            time.sleep(POLL_SECONDS)
            continue
        releases.reap(ctx.db, ctx.settings)
        detail["verdict"] = verdict.decision
        if verdict.decision == "promote":
            ctx.say(f"canary promoted: {verdict.reason}")
            return StepResult(detail=detail | {"reason": verdict.reason})
        ctx.say(f"canary rolled back: {verdict.reason}; the previous release serves 100% again")
        return StepResult(
            status="failed", exit_code=1, detail=detail | {"error": f"canary rolled back: {verdict.reason}"}
        )
