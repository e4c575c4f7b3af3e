"""Named locks that hold wherever the store is shared: :func:`held`.

Web, workers and trainer may run on different hosts with no shared directory, so a lock that
must be global (one intake per repository, one commit-status report per run) cannot be a file
under ``LOOPLINE_HOME``. It lives where those hosts meet: the database. On PostgreSQL it is a
session-level advisory lock on a connection held for the block; the server drops it when that
connection closes, so a holder that dies (even by SIGKILL) frees it. A SQLite file cannot be
shared across hosts, so there it is a file lock beside the database file, which the kernel drops
when its holder dies.

:func:`file_lock` is also the lock for what is only this host's (worktrees, mirrors, environments).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from store.db import Database, StoreUnavailable

log = logging.getLogger(__name__)
#: What a lock's name may be (a file name on SQLite): e.g. ``intake-<repository>``, ``status-<run>``.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@contextmanager
def held(db: Database, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock ``name`` for the block, against every process of every host using ``db``;
    yields False (holding nothing) when ``wait`` is off and someone else holds it.

    Two blocks in one process exclude each other too (each takes its own connection or file)."""
    if not _NAME.match(name):
        raise ValueError(f"bad lock name {name!r}: use letters, digits, '.', '_' or '-'")
    if db.dialect == "postgresql":
        with _advisory(db, key(name), wait=wait) as mine:
            yield mine
    elif db.dialect == "sqlite":
        with file_lock(_beside(db) / f"{name}.lock", wait=wait) as mine:
            yield mine
    else:
        raise ValueError(f"no named locks on {db.dialect}")


def key(name: str) -> int:
    """The advisory lock's key: a stable signed 64-bit hash of the name (Python's ``hash()``
    differs between processes), prefixed so other users of the database's keys are unlikely
    to collide with ours."""
    digest = hashlib.blake2b(f"loopline:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _advisory(db: Database, lock: int, *, wait: bool) -> Iterator[bool]:
    """A session-level advisory lock on a pooled connection, in autocommit so it holds no
    transaction open meanwhile. The connection goes back to the pool only after an unlock that
    succeeded; otherwise it is closed, and the server drops whatever its session held."""
    try:
        conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except OperationalError as exc:
        raise StoreUnavailable(str(exc.orig)) from exc
    clean = False
    try:
        mine = _acquire(conn, lock, wait=wait)
        if not mine:
            clean = True
            yield False
            return
        try:
            yield True
        finally:
            clean = _release(conn, lock)
    finally:
        if not clean:  # interrupted while taking it, or the unlock failed: closing releases it
            conn.invalidate()
        conn.close()


def _acquire(conn: Connection, lock: int, *, wait: bool) -> bool:
    try:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock})
            return True
        return bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": lock}))
    except OperationalError as exc:
        raise StoreUnavailable(str(exc.orig)) from exc


def _release(conn: Connection, lock: int) -> bool:
    """Unlock; False when the session is gone or did not hold it (then it is closed)."""
    try:
        return bool(conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": lock}))
    except DBAPIError as exc:
        log.warning("lock %s: unlock failed (%s); closing its connection releases it", lock, exc)
        return False


def _beside(db: Database) -> Path:
    """``<database file>.locks``: where every process using the SQLite file finds the same locks."""
    path = make_url(db.url).database
    if not path or path == ":memory:":
        raise ValueError("named locks on SQLite need a database file")
    return Path(f"{path}.locks")


@contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` for the block; yields False (holding
    nothing) when ``wait`` is off and another holds it. The kernel drops it if the holder dies.
    It holds among the processes of one host (one kernel) only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
