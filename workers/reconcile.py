"""The reconciler: make what happens match what the store says should (beat, and every relay).

- a stage whose lease ran out (its worker died, or could not record) is taken over: its orphaned
  command is killed and it runs again, or fails after ``max_attempts`` with the reason;
- a stage or an intake whose message is neither waiting in the broker nor being worked on (the
  broker restarted empty, or the worker holding it died) is published again;
- a reproduction whose lease ran out fails (its worker died: it is not rebuilt again), one whose
  message the broker lost is published again;
- approvals that waited too long expire, worktrees of runs that ended without a worker go, and a
  canary whose run ended without a verdict is rolled back;
- a live release whose host is lost (silent for a lease, and the release does not answer) is
  handed to a serving host, which starts it again (a canary fails instead).

Each step is idempotent and takes the run's row lock, so several reconcilers may run at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from celery import Celery

from config.settings import Settings
from pipelines.errors import LooplineError
from store import deliveries, reproductions, runs, schedule
from store.clock import utcnow
from store.db import Database, StoreUnavailable
from store.releases import unjudged_canaries
from workers import asks, runner
from workers import reproduce as rebuild
from workers.heartbeat import beating

log = logging.getLogger(__name__)
#: How often the relay reconciles at most (the beat does too, as often); a third of a shorter lease.
EVERY_SECONDS = 10.0


def every(settings: Settings) -> float:
    return max(1.0, min(EVERY_SECONDS, settings.lease_seconds / 3))


#: A stage's message published this long ago (at most; twice a shorter lease), neither waiting in
#: the broker nor started, is lost: a worker that takes a message off the queue starts it at once.
LOST_AFTER = timedelta(seconds=15)
_QUEUES = ("default", "training", "serving")


def waiting_ids(app: Celery) -> set[str] | None:
    """Ids of the task messages waiting in the broker's queues; None when it cannot be read.

    Redis-specific (the only broker Loopline runs on): kombu keeps each queue as a list of JSON
    messages, one list per priority step.
    """
    keys = [q + suffix for q in _QUEUES for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")]
    found: set[str] = set()
    try:
        with app.connection_for_read() as conn:
            client = conn.default_channel.client
            for key in keys:
                for raw in client.lrange(key, 0, -1):
                    found.add(_message_id(raw))
    except Exception as exc:  # a broker that is down: nothing can be told lost now
        log.warning("reconcile: cannot read the broker's queues: %s", exc)
        return None
    return found


def _message_id(raw: bytes) -> str:
    try:
        message: dict[str, Any] = json.loads(raw)
        return str(message.get("headers", {}).get("id", ""))
    except ValueError:
        return ""


def intake_task_id(delivery_ids: list[str]) -> str:
    """The id of the intake message of these deliveries, to find it in the broker."""
    return f"intake-{delivery_ids[0]}"


class Poisoned(LooplineError, RuntimeError):
    """An intake whose worker died on it ``max_attempts`` times: failed, not tried again."""


@contextmanager
def intake_heartbeat(settings: Settings, db: Database, delivery_ids: list[str]) -> Iterator[None]:
    """Count the intake's attempt and keep its deliveries marked alive while it runs.

    :raises Poisoned: its earlier attempts all killed their worker (the deliveries fail).
    """
    attempt = deliveries.start_intake(db, delivery_ids)
    if attempt > settings.max_attempts:
        reason = f"intake failed {attempt - 1} times (its worker died each time); not tried again"
        deliveries.finish(db, delivery_ids, run_id=None, error=reason)
        raise Poisoned(reason)
    with beating(settings.lease_seconds / 3, lambda: deliveries.beat(db, delivery_ids)):
        yield


def reconcile(settings: Settings, db: Database, waiting: set[str] | None, now: datetime | None = None) -> int:
    """One pass; returns how many stages and intakes it sent back to work."""
    now = now or utcnow()
    moved = 0
    for run_id, name in schedule.expired(db, now):
        if runner.take_over(settings, db, run_id, name, why="its worker stopped renewing its lease", now=now):
            moved += 1
    if waiting is not None:
        lost_after = min(LOST_AFTER, timedelta(seconds=2 * settings.lease_seconds))
        for task_id in schedule.published_before(db, now - lost_after):
            if task_id not in waiting:
                schedule.forget_publication(db, task_id)
                moved += 1
        for task_id in reproductions.published_before(db, now - lost_after):
            if task_id not in waiting:
                reproductions.forget_publication(db, task_id)
                moved += 1
        # an intake alive renews its deliveries every third of a lease: silent for a whole one, gone
        for batch in deliveries.dispatched_before(db, now - timedelta(seconds=settings.lease_seconds)):
            if intake_task_id(batch) not in waiting:
                deliveries.release(db, batch)
                moved += 1
    if moved:
        log.warning(
            "reconcile: %d stage(s) or intake(s) were lost (a worker or the broker); sent again", moved
        )
    for ended in reproductions.fail_expired(db, now):
        rebuild.end_dead(settings, ended)
    for run_id in runs.expire_approvals(db, now):
        log.warning("reconcile: run %d waited for approval too long; cancelled", run_id)
    for run_id, repo, workspace in runs.finished_workspaces(db):
        runner.cleanup(settings, db, run_id, repo, workspace)
    runner.sweep(settings, db)
    for run_id in _unjudged_canaries(db):
        runner.recover_release(settings, db, run_id)
    _reap(settings, db)
    if waiting is not None:
        _take_over_lost(settings, db, waiting)
    return moved


def _take_over_lost(settings: Settings, db: Database, waiting: set[str]) -> None:
    """A lost host's releases go to the serving queue, one message each, with an id of its own
    (:func:`workers.asks.take_over_id`): sent again only when neither waiting nor done."""
    from workers import releases

    try:
        found = releases.lost(settings, db)
    except StoreUnavailable as exc:
        log.warning("reconcile: lost hosts' releases not looked for: %s", exc)
        return
    for release_id, host in found:
        if asks.take_over_id(release_id, host) in waiting:
            continue
        log.warning(
            "reconcile: release #%d's host %s is lost (silent for a lease, its release does not answer); "
            "asking a serving host (queue %s) to start it again",
            release_id, host, settings.serving_queue,
        )  # fmt: skip
        try:
            asks.ask_to_take_over(settings, release_id, host)
        except Exception as exc:  # kombu raises its own errors and the socket's: next pass
            log.warning("reconcile: could not publish the take-over of release #%d: %s", release_id, exc)


def _reap(settings: Settings, db: Database) -> None:
    """This host's retired releases stop even if the task asking it to was lost."""
    from workers import releases

    try:
        releases.reap(db, settings, ask_others=False)
    except StoreUnavailable as exc:
        log.warning("reconcile: retired releases not stopped: %s", exc)


def _unjudged_canaries(db: Database) -> list[int]:
    """Runs whose canary is on trial although their deploy stage is over (no one judges it)."""
    try:
        with db.session() as s:
            return unjudged_canaries(s)
    except StoreUnavailable:
        return []
