"""The Celery app: broker from the settings, its queues, reliability settings with reasons,
and the relay process each ``default`` worker runs beside itself.

``default`` (intake, most stages), ``training`` (retrain, evaluate, register), ``serving`` (the
``deploy`` stage when ``LOOPLINE_SERVING_QUEUE=serving``: releases pinned to serving hosts),
and one queue per host, ``host.<LOOPLINE_HOST>``, which every worker of that host also takes:
a release is stopped by a task sent there, since only its own host may signal its process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import click
from celery import Celery, bootsteps
from celery.signals import celeryd_after_setup
from kombu import Queue

from config.settings import Settings
from workers import asks
from workers.process import terminate

settings = Settings.from_env()

app = Celery("loopline", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    task_queues=(Queue("default"), Queue("training"), Queue("serving")),
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


@celeryd_after_setup.connect
def _take_host_queue(sender: str, instance: Any, **_: Any) -> None:
    """Every worker also takes its host's queue (the ``worker_direct`` pattern, per host)."""
    instance.app.amqp.queues.select_add(asks.queue(settings.host))


class RelayStep(bootsteps.StartStopStep):
    """Runs the relay (:mod:`workers.relay`) beside the worker for its lifetime (``--relay/--no-relay``).

    A separate process, not a thread: the prefork pool forks children at any time, and a
    fork taken while a thread holds an import or logging lock deadlocks the child.
    """

    def __init__(self, parent: Any, relay: bool = True, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = relay
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, parent: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.relay", "--parent", str(os.getpid())], stdin=subprocess.DEVNULL
        )

    def stop(self, parent: Any) -> None:
        if self.proc:
            terminate(self.proc)


class HostStep(bootsteps.StartStopStep):
    """Keeps this host alive in the store (:func:`workers.hosts.keep_alive`) for the worker's
    lifetime, saying whether it serves (takes the deploy stage's queue): a serving host that
    goes silent is lost, and its releases start again on another (an alive one starts again its
    own releases whose process died, :func:`workers.releases.revive`). A separate process, like the
    relay's, for the same reason; in the worker's process group, so it dies with the host."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, parent: Any) -> None:
        serves = settings.serving_queue in parent.app.amqp.queues.consume_from
        argv = [sys.executable, "-m", "workers.hosts", "--parent", str(os.getpid())]
        self.proc = subprocess.Popen([*argv, "--serves"] if serves else argv, stdin=subprocess.DEVNULL)

    def stop(self, parent: Any) -> None:
        if self.proc:
            terminate(self.proc)


app.user_options["worker"].add(
    click.Option(["--relay/--no-relay"], default=True, help="Publish Loopline's outbox from this worker.")
)
app.steps["worker"].add(RelayStep)
app.steps["worker"].add(HostStep)
