"""The outbox relay: publishes stored deliveries, due stages and reproductions to the broker,
debouncing data drops, and reconciles every few seconds (:mod:`workers.reconcile`).

Each ``default`` worker starts one beside itself (a Celery bootstep, :mod:`workers.celery_app`);
an atomic claim in the store makes several relays safe. The web process never talks to the broker.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from config.settings import Settings
from pipelines.config import ConfigError
from store import deliveries, reproductions, runs, schedule
from store.clock import as_utc, utcnow
from store.db import Database
from store.schedule import Due
from workers.gitops import GitError
from workers.locks import intake_lock
from workers.projects import mirror, project_at

if TYPE_CHECKING:
    from store.models import Delivery

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
#: Runs older than this are not reported to the Git host (e.g. when a status config is added).
REPORT_WINDOW = timedelta(days=1)
_debounce_cache: dict[str, tuple[float, float]] = {}


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
            if (mirror_.path / "HEAD").exists() and (
                head := mirror_.resolve(f"refs/heads/{repo.default_branch}")
            ):
                value = project_at(settings, repo, head).debounce_seconds
        except (ConfigError, GitError) as exc:
            log.warning("relay: cannot read debounce for %s: %s", repo_name, exc)
    _debounce_cache[repo_name] = (value, time.monotonic())
    return value


class Publisher(Protocol):
    def intake(self, delivery_ids: list[str]) -> None: ...

    def stage(self, due: Due) -> None: ...

    def prepare(self, run_id: int) -> None: ...

    def commit_status(self, run_id: int) -> None: ...

    def reproduction(self, reproduction_id: int, task_id: str) -> None: ...


def relay_once(settings: Settings, db: Database, publish: Publisher, now: datetime | None = None) -> int:
    """Publish what is due (deliveries, approved runs, retries, commit statuses to report);
    returns how many messages were sent."""
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
        newest = max(as_utc(r.received_at) for r in rows)
        oldest = min(as_utc(r.received_at) for r in rows)
        max_wait = max(debounce * 10, 60.0)
        if now - newest >= timedelta(seconds=debounce) or now - oldest >= timedelta(seconds=max_wait):
            batches.append(rows)
    busy: dict[str, bool] = {}  # one look per repository and pass: each is a store round trip
    for batch in batches:
        ids = [r.id for r in batch]
        repository = batch[0].repository
        if repository not in busy:
            busy[repository] = intake_busy(db, repository)
        if busy[repository]:  # one intake per repository at a time
            continue
        if not deliveries.claim(db, ids):
            continue
        try:
            publish.intake(ids)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; deliveries go back to pending")
            deliveries.release(db, ids)
    for run_id in runs.take_resumable(db):  # a retry: a worker makes its worktree first
        try:
            publish.prepare(run_id)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; run %s stays due", run_id)
            runs.request_resume(db, run_id)
    sent += publish_due(db, publish)
    for reproduction_id, task_id in reproductions.take_unpublished(db):
        try:
            publish.reproduction(reproduction_id, task_id)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; reproduction %s stays due", reproduction_id)
            reproductions.forget_publication(db, task_id)
    reporting = [r.name for r in settings.repositories if r.status is not None]
    for run_id in runs.take_unreported(db, reporting, since=now - REPORT_WINDOW):
        try:
            publish.commit_status(run_id)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; run %s's commit status goes next pass", run_id)
            runs.unreport(db, run_id)
    return sent


def publish_due(db: Database, publish: Publisher, run_id: int | None = None) -> int:
    """Publish the stages that are due (of ``run_id``, or of every run); returns how many."""
    sent = 0
    for due in schedule.take_due(db, run_id):
        try:
            publish.stage(due)
            sent += 1
        except Exception:
            log.exception("relay: publish failed; stage %s of run %s stays due", due.stage, due.run_id)
            schedule.forget_publication(db, due.task_id)
    return sent


def intake_busy(db: Database, repository: str) -> bool:
    """Whether an intake of ``repository`` runs now, on any host (it holds the repository's
    intake lock in the store)."""
    with intake_lock(db, repository) as free:
        return not free


def main(parent: int | None = None) -> None:
    """Relay until stopped, or until the worker that started it is gone."""
    from workers import reconcile
    from workers.celery_app import app
    from workers.context import current
    from workers.publish import CeleryPublisher

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/Relay] %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings, db = current()
    log.info("relay: publishing the outbox every %.1fs", POLL_SECONDS)
    reconciled = 0.0
    while not stop.is_set() and (parent is None or os.getppid() == parent):
        try:
            relay_once(settings, db, CeleryPublisher())
            if time.monotonic() - reconciled >= reconcile.every(settings):
                reconciled = time.monotonic()
                reconcile.reconcile(settings, db, reconcile.waiting_ids(app))
        except Exception:  # the relay must outlive a store or broker hiccup
            log.exception("relay: pass failed")
        stop.wait(POLL_SECONDS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Loopline outbox relay")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    main(parser.parse_args().parent)
