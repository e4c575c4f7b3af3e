"""What one host asks of others' workers, by a message on a queue: stop a release a transition
retired (only the host it runs on may signal its process: a pid means nothing elsewhere), start a
lost host's release again. Sent by a small send-only Celery app: the CLI, the web process and the
reconciler never load the workers' app.

Apart from :mod:`workers.hosts` so that the host's keep-alive may tend its releases
(``workers/releases.py`` sends these) without an import cycle.
"""

from __future__ import annotations

import logging
from functools import cache

from celery import Celery

from config.settings import Settings

log = logging.getLogger(__name__)
REAP = "loopline.reap"
TAKE_OVER = "loopline.take_over"


def queue(host: str) -> str:
    """Host ``host``'s own queue: every worker of that host takes it."""
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


def take_over_id(release_id: int, lost: str) -> str:
    """One message id per (release, lost host): the reconciler sends it again only when it is
    neither waiting in the broker nor done (the release then names another host)."""
    return f"take-over-{release_id}-{lost}"


def ask_to_take_over(settings: Settings, release_id: int, lost: str) -> None:
    """Ask a serving host to start release ``release_id`` of the lost host ``lost`` again."""
    _sender(settings.broker_url).send_task(
        TAKE_OVER,
        args=[release_id, lost],
        queue=settings.serving_queue,
        task_id=take_over_id(release_id, lost),
    )
