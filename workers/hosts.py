"""Tasks for one host: each worker also takes its host's queue, ``host.<LOOPLINE_HOST>``.

Only the host a release runs on may signal its process (a pid means nothing elsewhere), so a
release another host retired is stopped by a task sent to its host's queue. Sent by a small
send-only Celery app: the CLI and the web process never load the workers' app for it.
"""

from __future__ import annotations

import logging
from functools import cache

from celery import Celery

from config.settings import Settings

log = logging.getLogger(__name__)
REAP = "loopline.reap"


def queue(host: str) -> str:
    return f"host.{host}"


@cache
def _sender(broker_url: str) -> Celery:
    return Celery("loopline-sender", broker=broker_url, set_as_current=False)


def ask_to_reap(settings: Settings, host: str) -> None:
    """Ask ``host`` to stop its retired releases; a broker that is down leaves it to that
    host's next reconcile pass."""
    try:
        _sender(settings.broker_url).send_task(REAP, queue=queue(host))
    except Exception as exc:  # kombu raises its own errors and the socket's
        log.warning("could not ask %s to stop its retired releases: %s", host, exc)
