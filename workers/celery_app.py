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
    # No result backend: the store says what runs next (store/schedule.py) and holds every state.
    task_ignore_result=True,
    # One message at a time per process: a long retrain must not hold later messages hostage.
    worker_prefetch_multiplier=1,
    # Dead workers are found by their stages' leases (seconds), not by this: a message a dead
    # worker held comes back after it, stale, and is dropped. Above the longest stage, so a live
    # worker's message is not handed out again meanwhile (that one would be dropped too).
    broker_transport_options={"visibility_timeout": int(settings.stage_timeout * 2)},
    broker_connection_retry_on_startup=True,
    # Flower shows tasks from these events.
    worker_send_task_events=True,
    task_send_sent_event=True,
    beat_schedule={
        # Crash recovery (workers.reconcile): stages whose lease ran out, messages the broker lost.
        "reconcile": {"task": "loopline.reconcile", "schedule": 10.0, "options": {"expires": 10.0}},
        # Schedules, drift, volume and performance (workers/triggers.py): a cron minute is late
        # by at most this much.
        "triggers": {"task": "loopline.triggers", "schedule": 15.0},
        # Runs that need approval, failed or were gated, to the notification targets.
        "notify": {"task": "loopline.notify_sweep", "schedule": 5.0},
    },
)

from workers import relay  # noqa: E402  (registers the relay bootstep on this app)

relay.install(app)
