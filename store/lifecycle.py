"""The run, stage and reproduction lifecycles: statuses, the moves between them, and the only
code that writes them.

Every status change of a run or a stage goes through :func:`move_run` or :func:`move_stage`, which
refuse a move the tables below do not allow (:class:`IllegalMove`). So a terminal run never comes
back to life, a redelivered message cannot restart a finished stage, and every "which runs are
still going" question is answered from the sets declared here, once.
"""

from __future__ import annotations

from datetime import datetime

from store.models import Reproduction, Run, Stage, utcnow

#: Every status of a run or a stage (SPEC §5).
STATUSES = (
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "gate_failed",
)
#: Ended for good: nothing moves a run or a stage out of these.
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled", "gate_failed"})
#: Not ended: a human or a worker still has something to do.
ACTIVE = frozenset({"queued", "running", "awaiting_approval"})
#: A run whose stages a worker may start.
RUNNABLE = frozenset({"queued", "running"})
#: Runs a human may start again (``POST /api/runs/<id>/retry``).
RETRYABLE = frozenset({"failed", "cancelled", "gate_failed"})
#: Where a stage's step may leave it (:class:`workers.steps.StepResult`).
OUTCOMES = frozenset({"succeeded", "failed", "gate_failed", "awaiting_approval"})

_ENDS = frozenset({"succeeded", "failed", "gate_failed", "cancelled"})
RUN_MOVES: dict[str, frozenset[str]] = {
    # skipped: nothing to run; failed: no worktree, or a bad loopline.yml
    "queued": frozenset({"running", "failed", "skipped", "cancelled"}),
    "running": _ENDS | {"awaiting_approval"},
    # approved: queued again until its next stage starts
    "awaiting_approval": frozenset({"queued", "failed", "cancelled"}),
}
STAGE_MOVES: dict[str, frozenset[str]] = {
    # failed: a poison message, or its run could not start at all
    "queued": frozenset({"running", "skipped", "cancelled", "failed"}),
    # queued: its worker died and the lease expired; it runs again (a new attempt)
    "running": _ENDS | {"awaiting_approval", "queued"},
    "awaiting_approval": frozenset({"succeeded", "failed", "cancelled"}),
}


def listed(statuses: frozenset[str]) -> str:
    """``statuses`` in lifecycle order, for messages: "queued, running, awaiting_approval"."""
    return ", ".join(s for s in STATUSES if s in statuses)


class IllegalMove(ValueError):
    """A status change the lifecycle does not allow (a bug, or a stale message)."""


def allowed(moves: dict[str, frozenset[str]], current: str, to: str) -> bool:
    return to in moves.get(current, frozenset())


def move_run(run: Run, to: str, *, reason: str | None = None, now: datetime | None = None) -> None:
    """Move ``run`` to ``to``; a terminal status stamps ``finished_at``, ``running`` ``started_at``."""
    if run.status is None:  # a new, unflushed row: column defaults apply only on insert
        run.status = "queued"
    if not allowed(RUN_MOVES, run.status, to):
        raise IllegalMove(f"run {run.id}: {run.status} → {to} is not a move a run makes")
    now = now or utcnow()
    run.status = to
    if reason is not None:
        run.reason = reason
    if to == "running":
        run.started_at = run.started_at or now
    if to in TERMINAL:
        run.finished_at = now
        run.resume_requested_at = None


def move_stage(stage: Stage, to: str, *, now: datetime | None = None) -> None:
    """Move ``stage`` to ``to``, stamping its times; a stage going back to ``queued`` (its worker
    died) forgets its lease and its start, so the next attempt starts afresh."""
    if stage.status is None:
        stage.status = "queued"
    if not allowed(STAGE_MOVES, stage.status, to):
        raise IllegalMove(f"stage {stage.name} of run {stage.run_id}: {stage.status} → {to} is not allowed")
    now = now or utcnow()
    stage.status = to
    if to == "running":
        stage.started_at, stage.finished_at = now, None
    elif to == "queued":
        stage.started_at = None
    elif to in TERMINAL and stage.started_at is not None:  # a stage that never started has no end
        stage.finished_at = now


def end_run(
    run: Run, to: str, *, reason: str | None = None, rest: str = "skipped", now: datetime | None = None
) -> None:
    """End ``run`` (``to`` is terminal); every stage that has not started becomes ``rest``."""
    now = now or utcnow()
    move_run(run, to, reason=reason, now=now)
    for stage in run.stages:
        if stage.status == "queued":
            move_stage(stage, rest, now=now)


#: A reproduction (``POST /api/models/<name>/versions/<v>/reproduce``): ``succeeded`` when the
#: rebuild's artifact sha256, metrics and data all matched the registry's, else ``failed`` with
#: the reason (a difference, an error, or its worker dying).
REPRODUCTION_STATUSES = ("queued", "running", "succeeded", "failed")
REPRODUCTION_TERMINAL = frozenset({"succeeded", "failed"})
REPRODUCTION_MOVES: dict[str, frozenset[str]] = {
    # failed: its lineage cannot be rebuilt after all (the repository was unregistered)
    "queued": frozenset({"running", "failed"}),
    # failed also when its worker died: a rebuild that killed its worker is not tried again
    "running": REPRODUCTION_TERMINAL,
}


def move_reproduction(
    rep: Reproduction, to: str, *, reason: str | None = None, now: datetime | None = None
) -> None:
    """Move ``rep`` to ``to``; ``running`` stamps ``started_at``, an end ``finished_at`` and
    drops the lease."""
    if rep.status is None:
        rep.status = "queued"
    if not allowed(REPRODUCTION_MOVES, rep.status, to):
        raise IllegalMove(f"reproduction {rep.id}: {rep.status} → {to} is not a move a reproduction makes")
    now = now or utcnow()
    rep.status = to
    if reason is not None:
        rep.reason = reason
    if to == "running":
        rep.started_at = now
    if to in REPRODUCTION_TERMINAL:
        rep.finished_at = now
        rep.lease_owner = rep.lease_expires_at = rep.pgid = None
