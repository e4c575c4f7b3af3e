"""Hosts: each worker announces its host (``LOOPLINE_HOST``) and keeps it alive in the store;
each takes its host's queue, ``host.<name>``.

Only the host a release runs on may signal its process (a pid means nothing elsewhere), so a
release another host retired is stopped by a task sent to its host's queue (``workers/asks.py``).

A host whose heartbeat stops for a lease is lost (``store/hosts.py``): the reconciler sends
each release it served that no longer answers to the serving queue
(:func:`workers.asks.ask_to_take_over`), where a serving host starts it again
(``workers/releases.py`` ``take_over``). A host that stays alive tends its own releases: the
keep-alive of a serving host starts again, about every heartbeat, those whose process died
(``workers/releases.py`` ``revive``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from store import hosts as registry
from store.clock import utcnow
from store.db import Database, StoreUnavailable
from workers import releases
from workers.heartbeat import beating

log = logging.getLogger(__name__)
#: Other hosts seen this recently count as running beside this one (the storage warning).
RECENT = timedelta(hours=1)


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
    worker ``parent`` is gone (the stages' heartbeat, :func:`workers.heartbeat.beating`).

    A host that ``serves`` also starts again, as often, its releases whose process died while
    it stayed alive (:func:`workers.releases.revive`): here, on this loop, so a slow start
    never delays the heartbeat, which renews from its own thread."""
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
    tended = -every  # at once, then every ``every`` seconds
    with beating(every, renew):
        while not stop.is_set() and (parent is None or os.getppid() == parent):
            if serves and time.monotonic() - tended >= every:
                tended = time.monotonic()
                releases.revive(settings, db, log.warning)
            stop.wait(min(every, 1))


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
