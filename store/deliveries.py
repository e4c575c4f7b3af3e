"""The delivery outbox: store once, dedupe, and hand pending rows to the relay."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from pipelines.events import Event
from store.db import Database
from store.models import Delivery, utcnow

#: Providers whose deliveries are data events, batched per repository by the relay.
DATA_PROVIDERS = ("folder", "s3", "azure", "cloudevents")


@dataclass(frozen=True)
class Recorded:
    event_id: str
    #: accepted | duplicate | conflict (same delivery id, different body)
    status: str


def record_delivery(
    db: Database, *, provider: str, delivery_id: str, body: bytes, repository: str, event: Event
) -> Recorded:
    """Store a delivery as pending, exactly once per ``(provider, delivery_id)``."""
    digest = hashlib.sha256(body).hexdigest()
    row = Delivery(
        id=uuid.uuid4().hex,
        provider=provider,
        delivery_id=delivery_id[:200],
        body_sha256=digest,
        repository=repository,
        event=event.to_dict(),
        status="pending",
    )
    try:
        with db.session() as session:
            session.add(row)
        return Recorded(row.id, "accepted")
    except IntegrityError:
        with db.session() as session:
            existing = session.scalars(
                select(Delivery).where(
                    Delivery.provider == provider, Delivery.delivery_id == delivery_id[:200]
                )
            ).one()
            status = "duplicate" if existing.body_sha256 == digest else "conflict"
            return Recorded(existing.id, status)


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


def requeue_stuck(db: Database, older_than: timedelta) -> int:
    """Deliveries dispatched long ago but never processed (lost by a broker crash) go back."""
    cutoff: datetime = utcnow() - older_than
    with db.session() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.status == "dispatched", Delivery.dispatched_at < cutoff)
            .values(status="pending")
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def finish(db: Database, ids: list[str], *, run_id: int | None, error: str | None = None) -> None:
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status="failed" if error else "processed", run_id=run_id, error=error)
        )
