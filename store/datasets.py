"""The data ledger: numbered, immutable dataset versions per repository.

A version holds every object that landed for the repository (drop folder, S3/MinIO, Azure,
CloudEvents) and was not removed since; the objects themselves are in the content-addressed
object storage (``store/blobs.py``). Version 0 is "nothing landed": the repository's own files
under ``data.into`` alone. A run trains on the repository's files at its commit with its
version's objects laid over them (a landed object replaces a committed file at the same path).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines import ledger
from pipelines.ledger import Entry
from pipelines.retry import retrying
from store.db import Database
from store.models import DatasetVersion, utcnow

EMPTY_SHA256 = ledger.manifest_sha256([])
#: Landings that may race for the next number before one gives up (each loses to a commit).
LAND_ATTEMPTS = 20


def latest(session: Session, repository: str) -> DatasetVersion | None:
    return session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.repository == repository)
        .order_by(DatasetVersion.number.desc())
        .limit(1)
    ).one_or_none()


def current_number(db: Database, repository: str) -> int:
    """The newest version's number (0: nothing has landed)."""
    with db.session() as s:
        return (
            s.scalar(select(func.max(DatasetVersion.number)).where(DatasetVersion.repository == repository))
            or 0
        )


def get(session: Session, repository: str, number: int) -> DatasetVersion | None:
    return session.scalars(
        select(DatasetVersion).where(DatasetVersion.repository == repository, DatasetVersion.number == number)
    ).one_or_none()


def manifest(db: Database, repository: str, number: int | None) -> tuple[list[Entry], str]:
    """A version's manifest and its sha256; version 0 (or None) is the empty one."""
    if not number:
        return [], EMPTY_SHA256
    with db.session() as s:
        found = get(s, repository, number)
        if found is None:
            raise LookupError(f"{repository} has no dataset version {number}")
        return list(found.manifest), found.manifest_sha256


def for_run(db: Database, run_id: int) -> int | None:
    """The version a data run's objects landed as, if they did."""
    with db.session() as s:
        return s.scalar(select(DatasetVersion.number).where(DatasetVersion.run_id == run_id))


def land(
    db: Database,
    repository: str,
    landed: list[Entry],
    removed: list[str],
    *,
    trigger: dict[str, Any],
    run_id: int | None = None,
) -> int:
    """A new version: the newest one with ``removed`` paths taken out and ``landed`` put in.
    Returns its number, or the newest one's when nothing changes. Two landings at once: the
    unique ``(repository, number)`` makes the second apply itself on top of the first (the one
    retry policy, quick waits: the winner has committed by then)."""
    try:
        for attempt in retrying(IntegrityError, attempts=LAND_ATTEMPTS, first_wait=0.01):
            with attempt:
                return _land_once(db, repository, landed, removed, trigger=trigger, run_id=run_id)
    except IntegrityError as exc:
        raise RuntimeError(f"could not record a dataset version of {repository}: too many at once") from exc
    raise AssertionError("unreachable: retrying either returns or raises")


def _land_once(
    db: Database,
    repository: str,
    landed: list[Entry],
    removed: list[str],
    *,
    trigger: dict[str, Any],
    run_id: int | None,
) -> int:
    with db.session() as s:
        prior = latest(s, repository)
        change = ledger.apply(prior.manifest if prior else [], landed, removed)
        number = prior.number if prior else 0
        if not change.changed:
            return number
    with db.session() as s:  # IntegrityError: another landing took number + 1 meanwhile
        s.add(
            DatasetVersion(
                repository=repository,
                number=number + 1,
                parent=number,
                manifest=change.manifest,
                manifest_sha256=ledger.manifest_sha256(change.manifest),
                trigger={
                    **trigger,
                    "added": change.added,
                    "replaced": change.replaced,
                    "removed": change.removed,
                },
                run_id=run_id,
                created_at=utcnow(),
            )
        )
    return number + 1
