"""Thin Celery tasks: each loads its inputs and calls a plain function.

Order comes from a canvas chain built once per run; no task ever waits on another.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any

from celery import chain
from celery.exceptions import Ignore

from config.settings import Settings
from pipelines.plan import CANONICAL, queue_for
from store import deliveries, runs
from workers import notify, runner, status, triggers
from workers.celery_app import app
from workers.context import current
from workers.intake import prepare_retry, prepare_run

log = logging.getLogger(__name__)


class StageFailed(Exception):
    """Raised to stop a run's chain after a stage did not succeed (shown in Flower)."""


def publish_stages(run_id: int, stages: tuple[str, ...] | list[str]) -> None:
    """Send the run's stages as one chain, each on its queue (training stages on ``training``).

    Each stage is its own task name (``loopline.stage.retrain``) and task id
    (``loopline-run<id>-<stage>``), so Flower lists them by name and the dashboard links to them.
    """
    if stages:
        chain(
            *(
                STAGE_TASKS.get(s, run_stage)
                .si(run_id, s)
                .set(queue=queue_for(s), task_id=f"loopline-run{run_id}-{s}")
                for s in stages
            )
        ).apply_async()


class CeleryPublisher:
    """What the relay publishes with: intake tasks, and the rest of an approved run."""

    def intake(self, delivery_ids: list[str]) -> None:
        intake.apply_async(args=[delivery_ids], queue="default")

    def stages(self, run_id: int, stages: list[str]) -> None:
        publish_stages(run_id, stages)

    def prepare(self, run_id: int) -> None:
        prepare.apply_async(args=[run_id], queue="default")

    def commit_status(self, run_id: int) -> None:
        commit_status.apply_async(args=[run_id], queue="default")


# Intake does git fetches and diffs: acks_late + reject_on_worker_lost so a crash mid-intake
# redelivers it; prepare_run is idempotent, so a second delivery finds the run already made.
@app.task(name="loopline.intake", acks_late=True, reject_on_worker_lost=True)
def intake(delivery_ids: list[str]) -> int | None:
    settings, db = current()
    prepared = prepare_run(settings, db, delivery_ids)
    if prepared.stages:
        assert prepared.run_id is not None
        publish_stages(prepared.run_id, prepared.stages)
    if prepared.run_id is not None:  # only once the chain is out (a superseded run has none)
        deliveries.finish(db, delivery_ids, run_id=prepared.run_id)
    return prepared.run_id


# A retry: its worktree at the commit, then its stages. Idempotent like intake.
@app.task(name="loopline.prepare", acks_late=True, reject_on_worker_lost=True)
def prepare(run_id: int) -> None:
    settings, db = current()
    prepared = prepare_retry(settings, db, run_id)
    publish_stages(run_id, prepared.stages)


# Tells the Git host the run's current status (never the web process). Idempotent: a repeat
# sends the same state again. Bounded: a few quick retries inside, never raises.
@app.task(name="loopline.commit_status", acks_late=True, reject_on_worker_lost=True)
def commit_status(run_id: int) -> None:
    settings, db = current()
    status.report(settings, db, run_id)


# Stages run for minutes (retrain: up to the stage timeout). acks_late + reject_on_worker_lost:
# a worker killed mid-stage gives the message back and the stage runs again; the broker's
# visibility timeout (celery_app) is set above the longest stage so it is never handed out twice.
@app.task(name="loopline.stage", acks_late=True, reject_on_worker_lost=True, throws=(StageFailed,))
def run_stage(run_id: int, stage: str) -> str:
    settings, db = current()
    outcome = runner.execute(settings, db, run_id, stage)
    if outcome in ("awaiting_approval", "cancelled", runner.ALREADY_RUNNING):
        raise Ignore()  # the chain stops here; an approval (or the other worker's chain) goes on
    if outcome != "succeeded":
        raise StageFailed(f"run {run_id}: stage {stage} {outcome}")
    return outcome


#: One task per stage, named after it (the body is ``run_stage``'s); ``loopline.stage`` stays for
#: messages published before.
STAGE_TASKS = {
    name: app.task(
        name=f"loopline.stage.{name}", acks_late=True, reject_on_worker_lost=True, throws=(StageFailed,)
    )(run_stage.run)
    for name in CANONICAL
}


# Periodic and idempotent: acks early is fine, a lost tick is redone 30 s later.
@app.task(name="loopline.reconcile")
def reconcile() -> int:
    settings, db = current()
    moved = deliveries.requeue_stuck(db, older_than=timedelta(minutes=5))
    if moved:
        log.warning("reconcile: %d deliveries were dispatched but never processed; re-queued", moved)
    for run_id in runs.expire_approvals(db):
        log.warning("reconcile: run %d waited for approval too long; cancelled", run_id)
    for run_id, repo, workspace in runs.finished_workspaces(db):
        runner.cleanup(settings, db, run_id, repo, workspace)
    return moved


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
