"""What runs next, decided by the store: the broker is only a cache of it.

A stage is *due* when its run may go on (queued or running, with a worktree), every earlier
stage succeeded and it is queued without a publication. :func:`take_due` claims due stages
atomically and names the message that may run each (``task_id``): a message with another id is
stale and dropped, so a republished stage still runs once (an older message that comes first,
while its stage waits to be published again, may start it: the stage's status decides, once).
A worker that starts a stage holds a *lease* (``host:pid``, renewed by a heartbeat); the
reconciler finds leases that expired (:func:`expired`) and publications the broker lost
(:func:`forget_publication`), and :func:`take_over` sends such a stage back to the queue as a
new attempt, or fails it after ``max_attempts`` with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, aliased

from store.db import Database
from store.lifecycle import RUNNABLE, end_run, move_stage
from store.models import Run, Stage, as_utc, utcnow


@dataclass(frozen=True)
class Due:
    run_id: int
    stage: str
    task_id: str


@dataclass(frozen=True)
class Orphan:
    """What a dead worker may have left running: its command's process group, on its host."""

    host: str
    pgid: int


def owner() -> str:
    """This process, as a lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(lease_owner: str | None) -> bool:
    """Whether the lease holder may still run (certainly dead only when it ran on this host)."""
    host, _, pid = (lease_owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _due_query(run_id: int | None = None):  # type: ignore[no-untyped-def]
    earlier = aliased(Stage)
    query = (
        select(Stage.id)
        .join(Run, Run.id == Stage.run_id)
        .where(
            Stage.status == "queued",
            Stage.published_at.is_(None),
            Run.status.in_(RUNNABLE),
            Run.workspace.is_not(None),
            ~exists().where(
                and_(
                    earlier.run_id == Stage.run_id,
                    earlier.position < Stage.position,
                    earlier.status != "succeeded",
                )
            ),
        )
        .order_by(Stage.run_id, Stage.position)
    )
    return query.where(Stage.run_id == run_id) if run_id is not None else query


def take_due(db: Database, run_id: int | None = None, limit: int = 100) -> list[Due]:
    """Claim the stages that are due (of ``run_id``, or all), each with its new message id."""
    with db.session() as s:
        ids = list(s.scalars(_due_query(run_id).limit(limit)))
    claimed: list[Due] = []
    for stage_id in ids:
        with db.session() as s:
            row = s.execute(select(Stage.run_id, Stage.name, Stage.task_id).where(Stage.id == stage_id)).one()
            task_id = message_id(row.run_id, row.name, first=row.task_id is None)
            result = s.execute(
                update(Stage)
                .where(Stage.id == stage_id, Stage.status == "queued", Stage.published_at.is_(None))
                .values(published_at=utcnow(), task_id=task_id)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
        claimed.append(Due(row.run_id, row.name, task_id))
    return claimed


def message_id(run_id: int, stage: str, *, first: bool) -> str:
    """``loopline-run<id>-<stage>`` (what the dashboard links to in Flower) for a stage's first
    message; a later one (a new attempt, or one the broker lost) gets a suffix of its own."""
    base = f"loopline-run{run_id}-{stage}"
    return base if first else f"{base}-{uuid.uuid4().hex[:8]}"


def forget_publication(db: Database, task_id: str) -> None:
    """The message is gone (its publish failed, or the broker lost it): the stage is due again."""
    with db.session() as s:
        s.execute(
            update(Stage).where(Stage.task_id == task_id, Stage.status == "queued").values(published_at=None)
        )


def published_before(db: Database, cutoff: datetime) -> list[str]:
    """Message ids of queued stages published before ``cutoff`` (to look for in the broker)."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Stage.task_id)
                .join(Run, Run.id == Stage.run_id)
                .where(
                    Stage.status == "queued",
                    Stage.published_at < cutoff,
                    Stage.task_id.is_not(None),
                    Run.status.in_(RUNNABLE),
                )
            )
        )


def start(stage: Stage, lease_seconds: float, now: datetime | None = None) -> None:
    """``stage`` (queued, its run's row locked) starts here: a new attempt under this process's lease."""
    now = now or utcnow()
    move_stage(stage, "running", now=now)
    stage.attempt += 1
    stage.lease_owner, stage.lease_expires_at, stage.pgid = (
        owner(),
        now + timedelta(seconds=lease_seconds),
        None,
    )


def finish(
    stage: Stage,
    status: str,
    *,
    exit_code: int | None,
    detail: dict[str, Any] | None,
    log: str,
    log_object: str | None,
    now: datetime | None = None,
) -> None:
    """``stage`` (running, its run's row locked) ended with ``status``: its lease is released
    and its outcome recorded (``log``: the whole log, or the tail of the one in ``log_object``)."""
    stage.lease_owner = stage.lease_expires_at = stage.pgid = None
    move_stage(stage, status, now=now)
    stage.exit_code, stage.detail = exit_code, detail
    stage.log, stage.log_object = log, log_object


def lease_alive(stage: Stage, now: datetime | None = None) -> bool:
    now = now or utcnow()
    expires = stage.lease_expires_at
    return expires is not None and as_utc(expires) > now and holder_alive(stage.lease_owner)


def take_over(
    session: Session, run: Run, stage: Stage, *, max_attempts: int, why: str, now: datetime | None = None
) -> Orphan | None:
    """A running stage whose worker is gone goes back to the queue (due again), or, after
    ``max_attempts`` attempts, fails with ``why`` and ends its run. The run's row is locked.
    Returns the process group the dead worker may have left running."""
    now = now or utcnow()
    host = (stage.lease_owner or "").rpartition(":")[0]
    orphan = Orphan(host, stage.pgid) if stage.pgid else None
    stage.lease_owner = stage.lease_expires_at = stage.pgid = None
    stage.published_at = None  # due again; its next message gets an id of its own
    if stage.attempt >= max_attempts:
        move_stage(stage, "failed", now=now)
        stage.exit_code = None
        stage.log = (stage.log or "") + f"[loopline] {why}; failed after {stage.attempt} attempts\n"
        stage.detail = {**(stage.detail or {}), "error": f"{why} ({stage.attempt} attempts)"}
        if run.status in RUNNABLE:
            end_run(
                run, "failed", reason=f"stage {stage.name} failed: {why} ({stage.attempt} attempts)", now=now
            )
    else:
        move_stage(stage, "queued", now=now)
        stage.detail = {**(stage.detail or {}), "requeued": why}
    return orphan


def renew(db: Database, stage_id: int, lease_owner: str, attempt: int, lease_seconds: float) -> bool:
    """Extend this attempt's lease; False when it is no longer ours (taken over, or ended)."""
    with db.session() as s:
        result = s.execute(
            update(Stage)
            .where(
                Stage.id == stage_id,
                Stage.status == "running",
                Stage.lease_owner == lease_owner,
                Stage.attempt == attempt,
            )
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def copy_log(db: Database, run_id: int, name: str, text: str) -> None:
    """The tail of a running stage's log, for readers on other hosts (nothing once it ended)."""
    with db.session() as s:
        s.execute(
            update(Stage)
            .where(Stage.run_id == run_id, Stage.name == name, Stage.status == "running")
            .values(log=text)
        )


def record_pgid(db: Database, stage_id: int, lease_owner: str, pgid: int) -> None:
    with db.session() as s:
        s.execute(
            update(Stage).where(Stage.id == stage_id, Stage.lease_owner == lease_owner).values(pgid=pgid)
        )


def expired(db: Database, now: datetime | None = None) -> list[tuple[int, str]]:
    """(run, stage) of running stages whose lease ran out: their worker stopped renewing it."""
    now = now or utcnow()
    with db.session() as s:
        rows = s.execute(
            select(Stage.run_id, Stage.name).where(Stage.status == "running", Stage.lease_expires_at < now)
        )
        return [(r, n) for r, n in rows]
