"""Trigger deliveries and what each trigger last did.

A trigger (manual, schedule, drift, volume, performance) is stored as a delivery of provider
``trigger``, so the relay and intake treat it like a webhook: one run per delivery id, planned,
superseding, gated and approved like the others. Its delivery id names what it is about (a
schedule's tick, a drift episode), so asking twice for the same thing makes one run.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select

from pipelines.events import Event
from store.db import Database
from store.deliveries import Recorded, record_delivery
from store.lifecycle import ACTIVE
from store.models import Delivery, Run, TriggerState, as_utc, utcnow

PROVIDER = "trigger"


def request_run(db: Database, *, repository: str, trigger: str, ref: str, reason: str, key: str) -> Recorded:
    """Store a trigger's delivery ``<trigger>:<key>``: ``accepted`` once, ``duplicate`` after,
    ``conflict`` when the same key asked for something else."""
    event = Event(type=trigger, repository=repository, ref=ref, reason=reason[:2000])
    body = json.dumps(event.to_dict(), sort_keys=True).encode()
    return record_delivery(
        db, provider=PROVIDER, delivery_id=f"{trigger}:{key}", body=body, repository=repository, event=event
    )


def active(db: Database, repository: str, trigger: str) -> str | None:
    """The repository's run (or delivery not yet planned) of ``trigger`` still under way, if any."""
    with db.session() as s:
        run_id = s.scalar(
            select(Run.id)
            .where(Run.repository == repository, Run.trigger == trigger, Run.status.in_(ACTIVE))
            .limit(1)
        )
        if run_id is not None:
            return f"run {run_id}"
        waiting = s.scalar(
            select(Delivery.id)
            .where(
                Delivery.provider == PROVIDER,
                Delivery.repository == repository,
                Delivery.delivery_id.like(f"{trigger}:%"),
                Delivery.status.in_(("pending", "dispatched")),
                Delivery.run_id.is_(None),
            )
            .limit(1)
        )
        return f"event {waiting}" if waiting is not None else None


def state(db: Database, repository: str, trigger: str) -> TriggerState | None:
    with db.session() as s:
        return s.get(TriggerState, (repository, trigger))


def last_tick(db: Database, repository: str, trigger: str) -> datetime | None:
    found = state(db, repository, trigger)
    return as_utc(found.last_tick) if found and found.last_tick else None


def last_fired(db: Database, repository: str, trigger: str) -> datetime | None:
    found = state(db, repository, trigger)
    return as_utc(found.fired_at) if found and found.fired_at else None


def remember(
    db: Database,
    repository: str,
    trigger: str,
    *,
    reason: str,
    tick: datetime | None = None,
    fired_at: datetime | None = None,
    event_id: str | None = None,
) -> None:
    """Record what ``trigger`` did last (a tick handled, a fire); unset fields keep their value."""
    with db.session() as s:
        row = s.get(TriggerState, (repository, trigger), with_for_update=True)
        if row is None:
            row = TriggerState(repository=repository, trigger=trigger)
            s.add(row)
        row.reason, row.updated_at = reason[:2000], utcnow()
        if tick is not None:
            row.last_tick = tick
        if fired_at is not None:
            row.fired_at, row.event_id = fired_at, event_id


def fired(db: Database, event_id: str) -> tuple[str, str, str] | None:
    """(repository, trigger, reason) of a trigger's delivery."""
    with db.session() as s:
        row = s.get(Delivery, event_id)
        if row is None or row.provider != PROVIDER:
            return None
        return row.repository, row.event["type"], row.event.get("reason") or ""
