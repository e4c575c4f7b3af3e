"""A heartbeat: a thread that renews a lease while a block of work runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from store.db import StoreUnavailable


class Beat:
    """``lost`` turns True when a renewal says the lease is no longer ours."""

    lost = False


@contextmanager
def beating(every: float, renew: Callable[[], bool]) -> Iterator[Beat]:
    """Call ``renew()`` every ``every`` seconds until the block ends or it returns False. A store
    that cannot be written is tried again next time (the lease may run out meanwhile)."""
    beat, stop = Beat(), threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                if not renew():
                    beat.lost = True
                    return
            except StoreUnavailable:
                continue

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        thread.join()
