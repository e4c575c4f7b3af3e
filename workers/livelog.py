"""A running stage's log reaches the web process through the store, not a shared disk.

A step writes its log to a file in this host's scratch ``LOOPLINE_HOME``, which the web process
on another host cannot read. So while the step runs, :func:`streaming` copies the file's tail
into the stage's ``log`` column whenever the file grew (about once a second: one small UPDATE,
in the store the API reads anyway). A finished log goes to object storage
(:mod:`store.stagelogs`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from store import schedule
from store.db import Database, StoreUnavailable

log = logging.getLogger(__name__)

#: Seconds between two looks at a running stage's log file.
INTERVAL = 1.0


def tail(path: Path, limit: int) -> str:
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - limit))
        return fh.read().decode("utf-8", errors="replace")


@contextmanager
def streaming(db: Database, run_id: int, name: str, path: Path, limit: int) -> Iterator[None]:
    """While the block runs, the stage's ``log`` column follows the tail of ``path``."""
    stop = threading.Event()

    def pump() -> None:
        seen = -1
        while not stop.wait(INTERVAL):
            try:
                size = path.stat().st_size
                if size == seen:
                    continue
                text = tail(path, limit)
                schedule.copy_log(db, run_id, name, text)
                seen = size
            except (OSError, StoreUnavailable, SQLAlchemyError) as exc:  # next time; never the step
                log.debug("live log of run %s stage %s not copied: %s", run_id, name, exc)

    thread = threading.Thread(target=pump, name="stage-log", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
