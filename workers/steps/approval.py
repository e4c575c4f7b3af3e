"""The ``approval`` stage, and the check ``deploy`` makes before it releases anything.

The stage names what the run would ship — the commit, the model version and its sha256 — and
stops the chain without holding a worker; a human's decision is a plain state change
(:mod:`store.runs`), and an approval re-publishes the remaining stages. ``deploy`` works out
again what it would release and refuses anything the approval did not name.
"""

from __future__ import annotations

from datetime import timedelta

from store import runs
from store.clock import utcnow
from workers.steps import StepContext, StepError, StepResult
from workers.steps.release import ModelRef, model_for_run


def approval(ctx: StepContext) -> StepResult:
    model = model_for_run(ctx)
    config = ctx.project.deploy.approval
    now = utcnow()
    expires = now + timedelta(seconds=config.expires_after) if config.expires_after else None
    named = f"commit {ctx.commit[:12]}" + (f" and {model.name} v{model.version}" if model else "")
    ctx.say(
        f"waiting for approval of {named}: POST /api/runs/{ctx.run_id}/approve with the API token, "
        f"or `loopline approve {ctx.run_id}`"
        + (f"; expires at {expires.isoformat(timespec='seconds')}" if expires else "")
    )
    return StepResult(
        status="awaiting_approval",
        exit_code=None,
        detail={
            "commit": ctx.commit,
            "model": model.name if model else None,
            "model_version": model.version if model else None,
            "sha256": model.sha256 if model else None,
            "requested_at": now.isoformat(),
            "expires_at": expires.isoformat() if expires else None,
        },
    )


def check_approval(ctx: StepContext, model: ModelRef) -> None:
    """Refuse to release unless the run's approval (if it has an approval stage) names exactly
    this commit and this model version, sha256 included.

    :raises StepError: with what was approved and what would have been released.
    """
    with ctx.db.session() as s:
        stage = runs.stage_of(s, ctx.run_id, "approval")
        if stage is None:
            return
        status, named = stage.status, dict(stage.detail or {})
    if status != "succeeded" or named.get("decision") != "approved":
        raise StepError(f"this run needs an approval and has none (approval {status}); nothing deployed")
    by = named.get("by", "?")
    if named.get("commit") != ctx.commit:
        raise StepError(
            f"{by} approved commit {named.get('commit')}, but this run is at {ctx.commit}; nothing deployed"
        )
    approved = (named.get("model", model.name), named.get("model_version"), named.get("sha256", model.sha256))
    if approved != (model.name, model.version, model.sha256):
        raise StepError(
            f"{by} approved {approved[0]} v{approved[1]} (sha256 {str(approved[2])[:12]}…), but the deploy "
            f"would release {model.name} v{model.version} (sha256 {model.sha256[:12]}…); nothing deployed"
        )
    ctx.say(f"approved by {by}: commit {ctx.commit[:12]}, {model.name} v{model.version}")
