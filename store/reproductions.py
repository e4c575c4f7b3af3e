"""Reproductions: a model version rebuilt from its lineage by a worker, asked for over the API.

The web process only stores the request (:func:`request`), the outbox row; the relay publishes
it to the training queue (:func:`take_unpublished`); a worker starts it under a lease its
heartbeat renews (:func:`start`, :func:`renew`) and records the result (:func:`finish`). The
reconciler publishes again one whose message the broker lost (:func:`published_before`,
:func:`forget_publication`) and fails one whose worker stopped renewing its lease
(:func:`fail_expired`), so every reproduction ends. Statuses: ``store/lifecycle.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.errors import LooplineError
from store.db import Database, lock_row
from store.lifecycle import REPRODUCTION_TERMINAL, move_reproduction
from store.models import ModelVersion, Reproduction, as_utc, utcnow
from store.registry import model_version
from store.schedule import Orphan, holder_alive, owner
from store.views import iso

#: What :func:`start` answers instead of a :class:`Claim`: nothing to do for this message.
STALE, ALREADY_RUNNING, MISSING = "stale", "already_running", "missing"
#: The tail of a rebuild's log kept with its record.
LOG_TAIL = 8000


class NoLineage(LooplineError, ValueError):
    """The version's lineage lacks what a rebuild needs (answered with 409)."""


class KeyReused(LooplineError, ValueError):
    """The ``Idempotency-Key`` was used for another model version (answered with 409)."""


@dataclass(frozen=True)
class Requested:
    record: dict[str, Any]
    #: False: a repeat of an earlier request with the same ``Idempotency-Key``.
    created: bool


@dataclass(frozen=True)
class Claim:
    """A reproduction this worker now runs, under ``owner``'s lease."""

    id: int
    name: str
    version: int
    owner: str


@dataclass(frozen=True)
class Ended:
    """A reproduction ended here because its worker died: what that worker may have left running."""

    id: int
    name: str
    version: int
    orphan: Orphan | None


def request(
    db: Database, name: str, version: int, *, by: str, repositories: Collection[str], key: str | None = None
) -> Requested:
    """Store a queued reproduction of ``name`` v``version`` (the relay publishes it).

    :raises LookupError: no such version. :raises NoLineage: it cannot be rebuilt.
    :raises KeyReused: ``key`` named a reproduction of another version.
    """
    try:
        with db.session() as s:
            if key is not None and (earlier := _by_key(s, key)) is not None:
                return _repeat(earlier, name, version)
            mv = model_version(s, name, version)
            if mv is None:
                raise LookupError(f"no version {version} of model {name[:64]!r}")
            _check_lineage(mv, repositories)
            rep = Reproduction(
                model_version_id=mv.id,
                model_name=mv.name,
                version=mv.version,
                status="queued",
                requested_by=by,
                idempotency_key=key,
                log="",
                requested_at=utcnow(),
            )
            s.add(rep)
            s.flush()
            return Requested(as_dict(rep), created=True)
    except IntegrityError:  # the same key, at the same moment: the other request stored it
        with db.session() as s:
            earlier = _by_key(s, key or "")
            if earlier is None:
                raise
            return _repeat(earlier, name, version)


def _by_key(session: Session, key: str) -> Reproduction | None:
    return session.scalars(select(Reproduction).where(Reproduction.idempotency_key == key)).one_or_none()


def _repeat(earlier: Reproduction, name: str, version: int) -> Requested:
    if (earlier.model_name, earlier.version) != (name, version):
        raise KeyReused(
            f"this Idempotency-Key asked for {earlier.model_name} v{earlier.version} "
            f"(reproduction {earlier.id})"
        )
    return Requested(as_dict(earlier), created=False)


def _check_lineage(mv: ModelVersion, repositories: Collection[str]) -> None:
    if not mv.dataset:
        raise NoLineage(
            f"{mv.name} v{mv.version} was registered before the data ledger: its lineage names no "
            "dataset version to rebuild it from"
        )
    if mv.repository not in repositories:
        raise NoLineage(f"{mv.name} v{mv.version}'s repository {mv.repository!r} is no longer registered")


def get(session: Session, reproduction_id: int) -> Reproduction | None:
    return session.get(Reproduction, reproduction_id)


def of_version(session: Session, name: str, version: int, limit: int = 50) -> list[Reproduction]:
    """The version's reproductions, newest first."""
    return list(
        session.scalars(
            select(Reproduction)
            .where(Reproduction.model_name == name, Reproduction.version == version)
            .order_by(Reproduction.id.desc())
            .limit(limit)
        )
    )


def as_dict(rep: Reproduction) -> dict[str, Any]:
    seconds = None
    if rep.started_at and rep.finished_at:
        seconds = round((as_utc(rep.finished_at) - as_utc(rep.started_at)).total_seconds(), 2)
    return {
        "id": rep.id,
        "model": rep.model_name,
        "version": rep.version,
        "status": rep.status,
        "reason": rep.reason,
        "requested_by": rep.requested_by,
        "requested_at": iso(rep.requested_at),
        "started_at": iso(rep.started_at),
        "finished_at": iso(rep.finished_at),
        "seconds": seconds,
        "result": rep.result,
        "log": rep.log,
        "url": f"/api/reproductions/{rep.id}",
    }


def message_id(reproduction_id: int, *, first: bool) -> str:
    """``loopline-reproduction<id>`` (Flower's task id); a later message gets a suffix."""
    base = f"loopline-reproduction{reproduction_id}"
    return base if first else f"{base}-{uuid.uuid4().hex[:8]}"


def take_unpublished(db: Database, limit: int = 20) -> list[tuple[int, str]]:
    """Claim queued reproductions not yet published: ``(id, message id)`` each, once."""
    with db.session() as s:
        rows = s.execute(
            select(Reproduction.id, Reproduction.task_id)
            .where(Reproduction.status == "queued", Reproduction.published_at.is_(None))
            .order_by(Reproduction.id)
            .limit(limit)
        ).all()
    claimed: list[tuple[int, str]] = []
    for rep_id, previous in rows:
        task_id = message_id(rep_id, first=previous is None)
        with db.session() as s:
            result = s.execute(
                update(Reproduction)
                .where(
                    Reproduction.id == rep_id,
                    Reproduction.status == "queued",
                    Reproduction.published_at.is_(None),
                )
                .values(published_at=utcnow(), task_id=task_id)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append((rep_id, task_id))
    return claimed


def forget_publication(db: Database, task_id: str) -> None:
    """Its message is gone (the publish failed, or the broker lost it): publish it again."""
    with db.session() as s:
        s.execute(
            update(Reproduction)
            .where(Reproduction.task_id == task_id, Reproduction.status == "queued")
            .values(published_at=None)
        )


def published_before(db: Database, cutoff: datetime) -> list[str]:
    """Message ids of queued reproductions published before ``cutoff`` (to look for in the broker)."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Reproduction.task_id).where(
                    Reproduction.status == "queued",
                    Reproduction.published_at < cutoff,
                    Reproduction.task_id.is_not(None),
                )
            )
        )


def _locked(session: Session, reproduction_id: int) -> Reproduction | None:
    """The row, locked for the transaction (a no-op write: PostgreSQL's row lock, SQLite's write
    transaction), so a worker and the reconciler never both act on the same old state."""
    lock_row(session, Reproduction, reproduction_id)
    return session.get(Reproduction, reproduction_id, populate_existing=True)


def _lease_alive(rep: Reproduction, now: datetime) -> bool:
    expires = rep.lease_expires_at
    return expires is not None and as_utc(expires) > now and holder_alive(rep.lease_owner)


def start(
    db: Database, reproduction_id: int, task_id: str | None, lease_seconds: float
) -> Claim | Ended | str:
    """Start the reproduction here, under this process's lease. A message delivered again after
    its worker died ends it, failed (:class:`Ended`). Else why this message has nothing to do: its
    final status, :data:`STALE`, :data:`ALREADY_RUNNING` or :data:`MISSING`."""
    now = utcnow()
    with db.session() as s:
        rep = _locked(s, reproduction_id)
        if rep is None:
            return MISSING
        if rep.status in REPRODUCTION_TERMINAL:
            return rep.status
        if task_id is not None and rep.task_id != task_id:
            return STALE
        if rep.status == "running":
            if _lease_alive(rep, now):
                return ALREADY_RUNNING
            return _end_dead(rep, "its worker died during the rebuild", now)
        move_reproduction(rep, "running", now=now)
        rep.lease_owner, rep.lease_expires_at = owner(), now + timedelta(seconds=lease_seconds)
        return Claim(rep.id, rep.model_name, rep.version, rep.lease_owner)


def _end_dead(rep: Reproduction, why: str, now: datetime) -> Ended:
    host = (rep.lease_owner or "").rpartition(":")[0]
    orphan = Orphan(host, rep.pgid) if rep.pgid else None
    move_reproduction(rep, "failed", reason=why, now=now)
    return Ended(rep.id, rep.model_name, rep.version, orphan)


def record_pgid(db: Database, claim: Claim, pgid: int) -> None:
    """The rebuild command's process group, for whoever ends it if this worker dies."""
    with db.session() as s:
        s.execute(
            update(Reproduction)
            .where(Reproduction.id == claim.id, Reproduction.lease_owner == claim.owner)
            .values(pgid=pgid)
        )


def renew(db: Database, claim: Claim, lease_seconds: float) -> bool:
    """Extend the lease; False when it is no longer ours (the reconciler ended it)."""
    with db.session() as s:
        result = s.execute(
            update(Reproduction)
            .where(
                Reproduction.id == claim.id,
                Reproduction.status == "running",
                Reproduction.lease_owner == claim.owner,
            )
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def finish(
    db: Database, claim: Claim, status: str, *, reason: str, result: dict[str, Any] | None, log: str
) -> bool:
    """Record the end; False (nothing written) when the lease was lost and it ended already."""
    with db.session() as s:
        rep = _locked(s, claim.id)
        if rep is None or rep.status != "running" or rep.lease_owner != claim.owner:
            return False
        move_reproduction(rep, status, reason=reason[:2000])
        rep.result, rep.log = result, log[-LOG_TAIL:]
        return True


def fail_expired(db: Database, now: datetime | None = None) -> list[Ended]:
    """End, failed, the running reproductions whose worker stopped renewing its lease."""
    now = now or utcnow()
    with db.session() as s:
        ids = list(
            s.scalars(
                select(Reproduction.id).where(
                    Reproduction.status == "running", Reproduction.lease_expires_at < now
                )
            )
        )
    ended: list[Ended] = []
    for rep_id in ids:
        with db.session() as s:
            rep = _locked(s, rep_id)
            if rep is None or rep.status != "running" or _lease_alive(rep, now):
                continue
            why = "its worker stopped renewing its lease (it died, or lost the store)"
            ended.append(_end_dead(rep, why, now))
    return ended
