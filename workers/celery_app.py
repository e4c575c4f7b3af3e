"""The Celery app: broker from the settings, two queues, reliability settings with reasons."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from config.settings import Settings

settings = Settings.from_env()

app = Celery("loopline", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    task_queues=(Queue("default"), Queue("training")),
    task_default_queue="default",
    # No result backend: order comes from canvas chains and state lives in Loopline's store.
    task_ignore_result=True,
    # One message at a time per process: a long retrain must not hold later messages hostage.
    worker_prefetch_multiplier=1,
    # A redelivered message must outlive the longest stage, or Redis would hand a running
    # retrain to a second worker; twice the stage timeout leaves room for queueing.
    broker_transport_options={"visibility_timeout": int(settings.stage_timeout * 2)},
    broker_connection_retry_on_startup=True,
    # Flower shows tasks from these events.
    worker_send_task_events=True,
    task_send_sent_event=True,
    beat_schedule={
        # Crash recovery for the outbox: anything claimed but never processed goes back.
        "reconcile": {"task": "loopline.reconcile", "schedule": 30.0},
        # Schedules, drift, volume and performance (workers/triggers.py): a cron minute is late
        # by at most this much.
        "triggers": {"task": "loopline.triggers", "schedule": 15.0},
        # Runs that need approval, failed or were gated, to the notification targets.
        "notify": {"task": "loopline.notify_sweep", "schedule": 5.0},
    },
)

from workers import relay  # noqa: E402  (registers the relay bootstep on this app)

relay.install(app)
