"""The deploy stage: the approval it needs, the release an earlier attempt made, then the target.

The targets themselves (the local release and its canary trial, a project's command) are one
module each in ``workers/steps/targets/``; the approval wait before it is ``approval.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store import registry
from store import releases as states
from workers import releases
from workers.steps import StepContext, StepError, StepResult
from workers.steps.approval import check_approval
from workers.steps.release import model_for_run
from workers.steps.targets import local, targets

if TYPE_CHECKING:
    from store.models import Deployment


def deploy(ctx: StepContext) -> StepResult:
    model = model_for_run(ctx)
    if model is None:
        raise StepError("no registered model to deploy")
    check_approval(ctx, model)
    with ctx.db.session() as s:  # an earlier attempt whose worker died may have released already
        earlier = states.of_run(s, ctx.run_id)
    if earlier is not None:
        return _resume(ctx, earlier)
    return targets()[ctx.project.deploy.target](ctx, model)


def _resume(ctx: StepContext, dep: Deployment) -> StepResult:
    """This run released ``dep`` in an attempt whose worker died: never a second release. A
    canary still on trial is judged on (rolled back if its process died too); a release that
    was promoted or rolled back meanwhile is the outcome."""
    detail: dict[str, Any] = {
        "model": dep.model_name,
        "version": dep.version,
        "url": dep.url,
        "release": dep.id,
    }
    ctx.say(f"release #{dep.id} ({dep.model_name} v{dep.version}) was started by an earlier attempt")
    if dep.status == "canary":
        with ctx.db.session() as s:
            mv = registry.model_version(s, dep.model_name, dep.version)
        if mv is not None and releases.healthy(dep, mv.sha256):
            ctx.say("its canary is still on trial: judging it on")
            return local.trial(ctx, dep.id, detail)
        with ctx.db.session() as s:
            row = states.get(s, dep.id)
            assert row is not None
            if row.status == "canary":
                states.abort_canary(s, row)
        releases.reap(ctx.db, ctx.settings)
        reason = "the canary's process died with the worker judging it; rolled back"
        ctx.say(reason)
        return StepResult(status="failed", exit_code=1, detail=detail | {"error": reason})
    if dep.status in ("active", "standby", "retired"):
        return StepResult(detail=detail | {"verdict": "promote"})
    return StepResult(
        status="failed", exit_code=1, detail=detail | {"error": f"release #{dep.id} is {dep.status}"}
    )
