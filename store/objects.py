"""Event order per storage object: S3 and Azure deliver notifications late and out of order, but
each carries a sequencer that only grows for one key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import select

from pipelines.events import DataObject, sequencer_order
from store.db import Database
from store.models import LakeObject

_ADVANCE = (
    "INSERT INTO lake_objects (object_id, sequencer) VALUES (?, ?)"
    " ON CONFLICT (object_id) DO UPDATE SET sequencer = excluded.sequencer"
    " WHERE lake_objects.sequencer <= excluded.sequencer"
)


def object_id(item: DataObject) -> str:
    name = "\0".join((item.store, item.account or "", item.bucket, item.key))
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def advance(db: Database, item: DataObject) -> bool:
    """Record ``item`` as the object's newest event; False if a newer one was already seen.

    One conditional upsert, so two requests racing for the same key cannot both win. Events
    without a sequencer (drop folders, some CloudEvents) cannot be ordered and always pass.
    """
    if not item.sequencer:
        return True
    return db.execute_raw(_ADVANCE, (object_id(item), sequencer_order(item.sequencer))) == 1


def superseded(db: Database, items: Iterable[DataObject]) -> set[str]:
    """Ids of the objects among ``items`` for which a newer event has been recorded since."""
    ordered = {object_id(i): sequencer_order(i.sequencer) for i in items if i.sequencer}
    if not ordered:
        return set()
    with db.session() as session:
        rows = session.execute(
            select(LakeObject.object_id, LakeObject.sequencer).where(LakeObject.object_id.in_(ordered))
        )
        return {oid for oid, newest in rows if newest > ordered[oid]}
