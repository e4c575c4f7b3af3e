"""The delivery outbox: store once, dedupe, and hand pending rows to the relay."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipelines.events import Event
from store.db import Database
from store.models import Delivery, utcnow

#: Providers whose deliveries are data events, batched per repository by the relay.
DATA_PROVIDERS = ("folder", "s3", "azure")


@dataclass(frozen=True)
class Recorded:
    event_id: str
    #: accepted | duplicate | conflict (same delivery id, different body)
    status: str


_INSERT = (
    "INSERT INTO deliveries (id, provider, delivery_id, body_sha256, repository, event, status, received_at)"
    " VALUES {values} ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING id"
)
_ROW = "(?, ?, ?, ?, ?, ?, 'pending', ?)"


def record_delivery(
    db: Database, *, provider: str, delivery_id: str, body: bytes, repository: str, event: Event
) -> Recorded:
    """Store a delivery as pending, exactly once per ``(provider, delivery_id)``.

    This is the write every acknowledgement waits for, so it is a raw ``INSERT … ON CONFLICT
    DO NOTHING`` in autocommit, shared with the process's concurrent acknowledgements (group
    commit, :mod:`store.groupcommit`); only a conflict (a redelivery) takes the slower ORM path.
    """
    digest = hashlib.sha256(body).hexdigest()
    event_id, delivery_id = uuid.uuid4().hex, delivery_id[:200]
    now = utcnow()
    # SQLite stores datetimes as text in SQLAlchemy's format; PostgreSQL takes the object.
    received = now.replace(tzinfo=None).isoformat(" ", "microseconds") if db.dialect == "sqlite" else now
    params = (event_id, provider, delivery_id, digest, repository, json.dumps(event.to_dict()), received)
    if db.grouped(_INSERT, _ROW)(params):
        return Recorded(event_id, "accepted")
    with db.session() as session:
        existing = session.scalars(
            select(Delivery).where(Delivery.provider == provider, Delivery.delivery_id == delivery_id)
        ).one()
        return Recorded(existing.id, "duplicate" if existing.body_sha256 == digest else "conflict")


def seen(db: Database, provider: str, delivery_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``delivery_id -> (event id, body sha256)`` for those already stored: a request holding many
    records is checked whole before any of them is written."""
    found: dict[str, tuple[str, str]] = {}
    with db.session() as session:
        for start in range(0, len(delivery_ids), 500):
            rows = session.execute(
                select(Delivery.delivery_id, Delivery.id, Delivery.body_sha256).where(
                    Delivery.provider == provider, Delivery.delivery_id.in_(delivery_ids[start : start + 500])
                )
            )
            found.update({d: (i, sha) for d, i, sha in rows})
    return found


def pending(db: Database, limit: int = 100) -> list[Delivery]:
    """Pending git deliveries (oldest first, at most ``limit``) and every pending data delivery:
    a debounced batch must be seen whole, or a storm of files would split into several runs."""
    base = select(Delivery).where(Delivery.status == "pending").order_by(Delivery.received_at)
    with db.session() as session:
        data = list(session.scalars(base.where(Delivery.provider.in_(DATA_PROVIDERS))))
        git = list(session.scalars(base.where(Delivery.provider.not_in(DATA_PROVIDERS)).limit(limit)))
    return git + data


def claim(db: Database, ids: list[str]) -> bool:
    """Atomically move pending deliveries to ``dispatched``; False if another relay won."""
    with db.session() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "pending")
            .values(status="dispatched", dispatched_at=utcnow())
        )
        if result.rowcount != len(ids):  # type: ignore[attr-defined]
            session.rollback()
            return False
    return True


def release(db: Database, ids: list[str]) -> None:
    """Undo a claim whose publish failed, so the next relay pass retries it."""
    with db.session() as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(status="pending"))


def start_intake(db: Database, ids: list[str]) -> int:
    """An intake of ``ids`` starts: count the attempt (the most any of them had) and mark them
    alive; returns the attempt's number."""
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(attempts=Delivery.attempts + 1, dispatched_at=utcnow())
        )
        return int(session.scalar(select(func.max(Delivery.attempts)).where(Delivery.id.in_(ids))) or 0)


def postpone(db: Database, ids: list[str]) -> None:
    """An intake that could not start yet (its repository is busy): pending again, no attempt."""
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "dispatched")
            .values(status="pending", attempts=Delivery.attempts - 1)
        )


def beat(db: Database, ids: list[str]) -> bool:
    """The intake of ``ids`` is alive (its heartbeat): the reconciler leaves them alone. False
    once they are no longer dispatched (finished, or given back)."""
    with db.session() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "dispatched")
            .values(dispatched_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def dispatched_before(db: Database, cutoff: datetime) -> list[list[str]]:
    """Batches (claimed together, so with one ``dispatched_at``) of deliveries dispatched and not
    heard of since ``cutoff``, oldest received first: the first one names the intake message."""
    batches: dict[datetime | None, list[str]] = {}
    with db.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.dispatched_at)
            .where(Delivery.status == "dispatched", Delivery.dispatched_at < cutoff)
            .order_by(Delivery.received_at)
        )
        for delivery_id, at in rows:
            batches.setdefault(at, []).append(delivery_id)
    return list(batches.values())


def finish(db: Database, ids: list[str], *, run_id: int | None, error: str | None = None) -> None:
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status="failed" if error else "processed", run_id=run_id, error=error)
        )


def first_of_run(session: Session, run_id: int) -> str | None:
    """The id of the delivery that started run ``run_id`` (the first of its batch)."""
    query = select(Delivery.id).where(Delivery.run_id == run_id).order_by(Delivery.received_at)
    return session.scalars(query.limit(1)).one_or_none()


def of_run(session: Session, run_id: int) -> list[Delivery]:
    """The deliveries that started run ``run_id`` (its batch)."""
    return list(session.scalars(select(Delivery).where(Delivery.run_id == run_id)))


def batch(db: Database, ids: list[str]) -> list[Delivery]:
    """The deliveries ``ids`` of one intake, oldest first."""
    with db.session() as s:
        return list(s.scalars(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.received_at)))
