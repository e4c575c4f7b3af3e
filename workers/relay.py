"""The outbox relay: publishes stored deliveries to the broker, debouncing data drops.

It runs as a thread inside each ``default`` worker (a Celery bootstep); an atomic claim in
the store makes several relays safe. The web process never talks to the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from celery import Celery, bootsteps

from loopline.settings import Settings
from pipelines.config import ConfigError
from store import deliveries
from store.db import Database
from store.models import Delivery, utcnow
from workers.gitops import GitError
from workers.projects import mirror, project_at

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
_debounce_cache: dict[str, tuple[float, float]] = {}


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def debounce_for(settings: Settings, repo_name: str) -> float:
    """``data.debounce_seconds`` from the default branch's ``loopline.yml`` (cached for 30 s)."""
    cached = _debounce_cache.get(repo_name)
    if cached and time.monotonic() - cached[1] < 30:
        return cached[0]
    value = 30.0
    repo = settings.repo(repo_name)
    if repo is not None:
        mirror_ = mirror(settings, repo)
        try:
            if (mirror_.path / "HEAD").exists() and (head := mirror_.resolve(f"refs/heads/{repo.default_branch}")):
                value = project_at(settings, repo, head).debounce_seconds
        except (ConfigError, GitError) as exc:
            log.warning("relay: cannot read debounce for %s: %s", repo_name, exc)
    _debounce_cache[repo_name] = (value, time.monotonic())
    return value


def relay_once(settings: Settings, db: Database, publish: Callable[[list[str]], None],
               now: datetime | None = None) -> int:
    """Publish what is due; returns how many intake tasks were sent."""
    now = now or utcnow()
    sent = 0
    batches: list[list[Delivery]] = []
    data: dict[str, list[Delivery]] = defaultdict(list)
    for row in deliveries.pending(db):
        if row.event.get("type") == "data":
            data[row.repository].append(row)
        else:
            batches.append([row])
    for repo_name, rows in data.items():
        debounce = debounce_for(settings, repo_name)
        newest = max(_utc(r.received_at) for r in rows)
        oldest = min(_utc(r.received_at) for r in rows)
        max_wait = max(debounce * 10, 60.0)
        if now - newest >= timedelta(seconds=debounce) or now - oldest >= timedelta(seconds=max_wait):
            batches.append(rows)
    for batch in batches:
        ids = [r.id for r in batch]
        if not deliveries.claim(db, ids):
            continue
        try:
            publish(ids)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; deliveries go back to pending")
            deliveries.release(db, ids)
    return sent


class RelayStep(bootsteps.StartStopStep):
    """Runs :func:`relay_once` in a thread for the worker's lifetime (``--relay/--no-relay``)."""

    def __init__(self, parent: Any, relay: bool = True, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = relay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._thread = threading.Thread(target=self._loop, name="loopline-relay", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from workers.context import current
        from workers.tasks import intake

        settings, db = current()
        log.info("relay: publishing the outbox every %.1fs", POLL_SECONDS)
        while not self._stop.is_set():
            try:
                relay_once(settings, db, lambda ids: intake.apply_async(args=[ids], queue="default"))
            except Exception:  # the relay must outlive a store hiccup
                log.exception("relay: pass failed")
            self._stop.wait(POLL_SECONDS)


def install(app: Celery) -> None:
    app.user_options["worker"].add(click.Option(["--relay/--no-relay"], default=True,
                                                help="Publish Loopline's outbox from this worker."))
    app.steps["worker"].add(RelayStep)
