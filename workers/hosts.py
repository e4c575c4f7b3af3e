"""Hosts: each worker announces its host (``LOOPLINE_HOST``) and keeps it alive in the store;
each takes its host's queue, ``host.<name>``.

Only the host a release runs on may signal its process (a pid means nothing elsewhere), so a
release another host retired is stopped by a task sent to its host's queue. Sent by a small
send-only Celery app: the CLI, the web process and the reconciler never load the workers' app.

A host whose heartbeat stops for a lease is lost (``store/hosts.py``): the reconciler sends
each release it served that no longer answers to the serving queue (:func:`ask_to_take_over`),
where a serving host starts it again (``workers/releases.py`` ``take_over``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from datetime import timedelta
from functools import cache

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from store import hosts as registry
from store.clock import utcnow
from store.db import Database, StoreUnavailable
from workers.heartbeat import beating

log = logging.getLogger(__name__)
REAP = "loopline.reap"
TAKE_OVER = "loopline.take_over"
#: Other hosts seen this recently count as running beside this one (the storage warning).
RECENT = timedelta(hours=1)


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


def shared_storage_warning(settings: Settings, others: list[str]) -> str | None:
    """A ``file://`` object storage works across hosts only if they all mount that directory."""
    if not others or not settings.storage.startswith("file://"):
        return None
    return (
        f"LOOPLINE_STORAGE_URL is {settings.storage} while hosts {', '.join(others)} run too: "
        "this works only if that directory is shared by every host (e.g. NFS); otherwise use "
        "s3://bucket/prefix"
    )


def keep_alive(
    settings: Settings,
    db: Database,
    *,
    serves: bool,
    parent: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Announce this host, then renew it every third of a lease until ``stop`` is set or the
    worker ``parent`` is gone (the stages' heartbeat, :func:`workers.heartbeat.beating`)."""
    stop = stop or threading.Event()
    try:
        registry.announce(db, settings.host, serves=serves)
        warning = shared_storage_warning(settings, registry.others(db, settings.host, utcnow() - RECENT))
        if warning:
            log.warning(warning)
    except (StoreUnavailable, SQLAlchemyError) as exc:  # the heartbeat writes the row later
        log.warning("host %s not announced yet: %s", settings.host, exc)

    def renew() -> bool:
        try:
            return registry.beat(db, settings.host, serves=serves)
        except SQLAlchemyError as exc:  # e.g. a store not migrated yet: next time
            log.warning("host %s heartbeat: %s", settings.host, exc)
            return True

    every = settings.lease_seconds / 3
    log.info("host %s alive (serves: %s), renewed every %.1fs", settings.host, serves, every)
    with beating(every, renew):
        while not stop.is_set() and (parent is None or os.getppid() == parent):
            stop.wait(1)


if __name__ == "__main__":
    from workers.context import current

    parser = argparse.ArgumentParser(description="Keep this Loopline host alive in the store")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--serves", action="store_true", help="this worker takes the deploy stage's queue")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/Host] %(message)s")
    settings, db = current()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    keep_alive(settings, db, serves=args.serves, parent=args.parent, stop=stopping)
