"""This host's locks: files (``fcntl.flock``) under ``LOOPLINE_HOME/locks`` for this host's
scratch (a run's worktree or workspace, a repository's mirror), which no other host touches.
A lock that must hold across hosts is the store's (:func:`store.locks.held`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from store import locks
from store.db import Database
from store.locks import file_lock


def host_lock(home: Path, name: str, *, wait: bool = True) -> AbstractContextManager[bool]:
    """The lock ``name`` among this host's processes (those sharing ``home``)."""
    return file_lock(home / "locks" / f"{name}.lock", wait=wait)


def mirror_lock(home: Path, repository: str) -> AbstractContextManager[bool]:
    """One fetch into this host's mirror of ``repository`` at a time: two would race on its
    refs, and two clones into one path remove each other's partial copy."""
    return host_lock(home, f"mirror-{repository}")


def intake_lock(db: Database, repository: str) -> AbstractContextManager[bool]:
    """The repository's intake lock, held by intake from the fetch to the run's insert, across
    all hosts (the store's); taken without waiting: False when another intake holds it."""
    return locks.held(db, f"intake-{repository}", wait=False)
