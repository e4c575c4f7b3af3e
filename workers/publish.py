"""Publishing by task name: what the relay and the tasks send, and the names the tasks take.

Messages go out through the Celery app by name (``send_task``), so publishing needs the app
only, not the tasks module: the tasks import the relay (to publish the next stage at once), and
the relay would otherwise import them back.
"""

from __future__ import annotations

from pipelines.plan import CANONICAL, queue_for
from store.schedule import Due
from workers.celery_app import app, settings
from workers.reconcile import intake_task_id

INTAKE = "loopline.intake"
PREPARE = "loopline.prepare"
COMMIT_STATUS = "loopline.commit_status"
REPRODUCE = "loopline.reproduce"
#: Stages published before each had a task of its own still arrive under this name.
STAGE = "loopline.stage"


def stage_task(stage: str) -> str:
    """One task per stage, named after it, so Flower lists them by name."""
    return f"{STAGE}.{stage}" if stage in CANONICAL else STAGE


class CeleryPublisher:
    """What the relay publishes with: intakes, stages that are due, retries, commit statuses."""

    def intake(self, delivery_ids: list[str]) -> None:
        app.send_task(INTAKE, args=[delivery_ids], queue="default", task_id=intake_task_id(delivery_ids))

    def stage(self, due: Due) -> None:
        queue = queue_for(due.stage)
        if due.stage == "deploy":  # releases run where the operator pinned them
            queue = settings.serving_queue
        app.send_task(
            stage_task(due.stage), args=[due.run_id, due.stage, due.task_id], queue=queue, task_id=due.task_id
        )

    def prepare(self, run_id: int) -> None:
        app.send_task(PREPARE, args=[run_id], queue="default")

    def commit_status(self, run_id: int) -> None:
        app.send_task(COMMIT_STATUS, args=[run_id], queue="default")

    def reproduction(self, reproduction_id: int, task_id: str) -> None:
        app.send_task(REPRODUCE, args=[reproduction_id, task_id], queue="training", task_id=task_id)
