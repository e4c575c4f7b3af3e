"""Per-process settings and store for worker code (created lazily, again after a fork)."""

from __future__ import annotations

import os

from config.settings import Settings
from store.db import Database

_state: dict[int, tuple[Settings, Database]] = {}


def current() -> tuple[Settings, Database]:
    """The settings and store for this process; a forked pool child never reuses its parent's pool."""
    pid = os.getpid()
    if pid not in _state:
        settings = Settings.from_env()
        _state.clear()
        _state[pid] = (settings, Database(settings.database_url))
    return _state[pid]
