"""The hosts whose workers run, by ``LOOPLINE_HOST``: each worker announces its host at start
and renews ``seen_at`` while it runs (``workers/hosts.py``, with the stages' heartbeat). A host
silent for a lease is lost: the reconciler starts the releases it served again on a host that
serves (``store/releases.py`` ``take_over``).

One row per host, not per worker: a host with several workers is alive while any of them beats,
which is what its release processes (started by any of them) need.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.clock import utcnow
from store.db import Database
from store.models import Host


def announce(db: Database, name: str, *, serves: bool, now: datetime | None = None) -> None:
    """A worker of host ``name`` starts (``serves``: it takes the queue of the deploy stage)."""
    with db.session() as s:
        _upsert(s, name, serves, now or utcnow(), started=True)


def beat(db: Database, name: str, *, serves: bool, now: datetime | None = None) -> bool:
    """Host ``name`` is alive (a row removed meanwhile is written again). Always True: a
    heartbeat's renewal that the lease is still ours."""
    with db.session() as s:
        _upsert(s, name, serves, now or utcnow(), started=False)
    return True


def _upsert(session: Session, name: str, serves: bool, now: datetime, *, started: bool) -> None:
    """One statement, so workers of one host announcing at once cannot collide. A host serves
    if any of its workers does."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Host).values(name=name, serves=serves, started_at=now, seen_at=now)
    changes = {"seen_at": stmt.excluded.seen_at, "serves": or_(Host.serves, stmt.excluded.serves)}
    if started:
        changes["started_at"] = stmt.excluded.started_at
    session.execute(stmt.on_conflict_do_update(index_elements=[Host.name], set_=changes))


def seen_at(session: Session, name: str) -> datetime | None:
    """When host ``name`` last beat (None: it never registered)."""
    return session.scalar(select(Host.seen_at).where(Host.name == name))


def serving(session: Session, since: datetime) -> list[str]:
    """The hosts that serve and beat after ``since``: where a lost host's releases can go."""
    query = select(Host.name).where(Host.serves.is_(True), Host.seen_at >= since).order_by(Host.name)
    return list(session.scalars(query))


def others(db: Database, name: str, since: datetime) -> list[str]:
    """The other hosts that beat after ``since``."""
    with db.session() as s:
        query = select(Host.name).where(Host.name != name, Host.seen_at >= since).order_by(Host.name)
        return list(s.scalars(query))
