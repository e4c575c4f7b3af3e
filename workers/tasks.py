"""Thin Celery tasks: each loads its inputs and calls a plain function.

The store decides what runs next (:mod:`store.schedule`): a stage that ends makes the next one
due, and it is published from the store, one message per stage. So the broker holds nothing the
store does not know: a message it loses is published again by the reconciler.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery.exceptions import Ignore

from config.settings import Settings
from pipelines.plan import CANONICAL
from store import deliveries
from workers import asks, notify, relay, releases, runner, status, triggers
from workers import publish as names
from workers import reconcile as reconciler
from workers import reproduce as rebuild
from workers.celery_app import app
from workers.context import current
from workers.intake import Busy, prepare_retry, prepare_run
from workers.publish import CeleryPublisher

log = logging.getLogger(__name__)


class StageFailed(Exception):
    """Raised after a stage did not succeed, so Flower shows the task failed."""


# Intake does git fetches and diffs: acks_late + reject_on_worker_lost so a crash mid-intake
# redelivers it; prepare_run is idempotent, so a second delivery finds the run already made.
@app.task(name=names.INTAKE, acks_late=True, reject_on_worker_lost=True)
def intake(delivery_ids: list[str]) -> int | None:
    settings, db = current()
    try:
        with reconciler.intake_heartbeat(settings, db, delivery_ids):
            prepared = prepare_run(settings, db, delivery_ids)
    except Busy:  # another intake of the repository runs: this one goes back, no slot is held
        deliveries.postpone(db, delivery_ids)
        return None
    except reconciler.Poisoned as exc:
        log.error("intake of %s: %s", delivery_ids, exc)
        return None
    if prepared.run_id is not None:
        relay.publish_due(db, CeleryPublisher(), prepared.run_id)
        deliveries.finish(db, delivery_ids, run_id=prepared.run_id)
    return prepared.run_id


# A retry: its worktree at the commit, then its first stage is due. Idempotent like intake.
@app.task(name=names.PREPARE, acks_late=True, reject_on_worker_lost=True)
def prepare(run_id: int) -> None:
    settings, db = current()
    prepare_retry(settings, db, run_id)
    relay.publish_due(db, CeleryPublisher(), run_id)


# Tells the Git host the run's current status (never the web process). Idempotent: a repeat
# sends the same state again. Bounded: a few quick retries inside, never raises.
@app.task(name=names.COMMIT_STATUS, acks_late=True, reject_on_worker_lost=True)
def commit_status(run_id: int) -> None:
    settings, db = current()
    status.report(settings, db, run_id)


# Stages run for minutes (retrain: up to the stage timeout) under a lease their heartbeat renews.
# acks_late + reject_on_worker_lost: a worker process killed mid-stage gives the message back at
# once, and the next worker takes the stage over (its lease holder is dead). A message that is
# not the stage's current one (``task_id``) is stale and dropped.
@app.task(name=names.STAGE, acks_late=True, reject_on_worker_lost=True, throws=(StageFailed,))
def run_stage(run_id: int, stage: str, task_id: str | None = None) -> str:
    settings, db = current()
    outcome = runner.execute(settings, db, run_id, stage, task_id)
    runner.sweep(settings, db)  # a trainer runs no reconciler: its hosts' worktrees go here
    relay.publish_due(db, CeleryPublisher(), run_id)  # the next stage, at once (else the relay's pass)
    if outcome in ("awaiting_approval", "cancelled", runner.ALREADY_RUNNING, runner.STALE):
        raise Ignore()
    if outcome != "succeeded":
        raise StageFailed(f"run {run_id}: stage {stage} {outcome}")
    return outcome


#: One task per stage, named after it (the body is ``run_stage``'s), so Flower lists them by name;
#: ``loopline.stage`` stays for messages published before.
STAGE_TASKS = {
    name: app.task(
        name=names.stage_task(name), acks_late=True, reject_on_worker_lost=True, throws=(StageFailed,)
    )(run_stage.run)
    for name in CANONICAL
}


# A reproduction rebuilds a model as long as a retrain does, so it runs on the trainer's queue
# (one at a time, beside retrains, never ahead of an app-code run's stages on the default queue).
# acks_late + reject_on_worker_lost: a worker process killed mid-rebuild gives the message back at
# once, and its next delivery finds the lease holder dead and ends the reproduction failed (a
# rebuild that killed its worker is not tried again; ask again). A whole host lost: the
# reconciler fails it when its lease runs out. A message that is not its current one is dropped.
@app.task(name=names.REPRODUCE, acks_late=True, reject_on_worker_lost=True)
def reproduce(reproduction_id: int, task_id: str | None = None) -> str:
    settings, db = current()
    return rebuild.run_requested(settings, db, reproduction_id, task_id)


# Sent to one host's queue (``host.<name>``): stops that host's releases a transition retired.
# Idempotent; a lost one is redone by that host's next reconcile pass.
@app.task(name=asks.REAP)
def reap() -> None:
    settings, db = current()
    releases.reap(db, settings)


# Sent to the serving queue by the reconciler when a release's host is lost. Acked early, no
# retries: a message lost before the take-over leaves the release on the lost host, and the
# reconciler publishes it again (its id is not waiting); once taken, the release names this host,
# and if this host dies while starting it, it is lost like any other. A duplicate is refused by
# the take-over's compare-and-set under the release's row lock, so it never starts twice.
@app.task(name=asks.TAKE_OVER)
def take_over(release_id: int, lost: str) -> str:
    settings, db = current()
    return releases.take_over(settings, db, release_id, lost, log.warning)


# Periodic and idempotent: acks early is fine, a lost tick is redone 10 s later. The relay beside
# each default worker reconciles too, so a default queue full of slow intakes never delays it.
@app.task(name="loopline.reconcile")
def reconcile() -> int:
    settings, db = current()
    return reconciler.reconcile(settings, db, reconciler.waiting_ids(app))


# Periodic (beat) and idempotent: each fire is a delivery whose id names what it is about, so a
# tick lost or run twice changes nothing.
@app.task(name="loopline.triggers")
def check_triggers() -> int:
    settings, db = current()
    fired = triggers.check(settings, db)
    for notice in fired:
        publish_notice(settings, notice)
    return len(fired)


def publish_notice(settings: Settings, notice: notify.Notice) -> None:
    """One task per target, so a receiver that is down delays only its own notices."""
    for target in notify.wanted(settings, notice):
        send_notice.apply_async(
            args=[dataclasses.asdict(target), dataclasses.asdict(notice)], queue="default"
        )


# Runs whose status is worth a notice; the claim in the store makes each one go out once.
@app.task(name="loopline.notify_sweep")
def notify_sweep() -> int:
    settings, db = current()
    due = notify.due(settings, db)
    for notice in due:
        publish_notice(settings, notice)
    return len(due)


# The receiver's URL is read from the environment inside: a task's arguments hold no secret.
# Quick retries inside (urllib3), then Celery's own with backoff for a receiver that is down.
@app.task(
    name="loopline.notify",
    autoretry_for=(notify.NotifyFailed,),
    retry_backoff=30,
    retry_backoff_max=900,
    max_retries=8,
    retry_jitter=True,
)
def send_notice(target: dict[str, Any], notice: dict[str, Any]) -> None:
    notify.send(notify.NotifyTarget(**target), notify.Notice(**notice))
