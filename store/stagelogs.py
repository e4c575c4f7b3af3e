"""Finished stage logs and rebuild logs in object storage: the web process serves them from
there, so it needs no disk shared with the worker that ran the stage or the rebuild.

Each attempt's log is its own named object (``logs/<run>/<stage>/<attempt>.log``): a late
attempt never overwrites an earlier one's. The stage row keeps the object's name and only the
log's tail (what the dashboard's summaries and ``loopline runs`` show). A reproduction's whole
log is ``logs/reproductions/<id>.log`` (:func:`reproduction`); its row keeps the tail.
"""

from __future__ import annotations

import re

from store.blobs import BlobError, BlobStore

#: Characters of a finished log kept in the store's ``stages.log`` (the whole is in the object).
TAIL = 16 * 1024


def name(run_id: int, stage: str, attempt: int) -> str:
    return f"logs/{run_id}/{stage}/{attempt}.log"


def reproduction(label: int | str) -> str:
    """A rebuild's whole log: by id for a reproduction asked for over the API, by its work
    directory's name for the CLI's own (``loopline models reproduce``; a model's name may hold
    any character, an object's only these)."""
    return f"logs/reproductions/{re.sub(r'[^A-Za-z0-9._-]', '_', str(label))}.log"


def save(blobs: BlobStore, run_id: int, stage: str, attempt: int, data: bytes) -> str:
    """Store a finished log; returns its object's name (:class:`BlobError` if it cannot)."""
    key = name(run_id, stage, attempt)
    blobs.put_named(key, data)
    return key


def load(blobs: BlobStore, key: str) -> bytes:
    """A finished log; :class:`BlobError` if the object storage does not have it."""
    data = blobs.get_named(key)
    if data is None:
        raise BlobError(f"stage log {key} is not in the object storage")
    return data


def tail(text: str) -> str:
    return text[-TAIL:]
