"""The one retry policy: a few attempts with exponential backoff and jitter (tenacity).

Retrying is for calls that fail for a moment (a host's 5xx, a dropped connection, a migration
race between processes starting at once); what fails for a reason is raised at once.
"""

from __future__ import annotations

import logging

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

_log = logging.getLogger("loopline.retry")


def retrying(
    on: type[BaseException] | tuple[type[BaseException], ...], *, attempts: int = 3, first_wait: float = 0.5
) -> Retrying:
    """Up to ``attempts`` tries of what raises ``on``, waiting about ``first_wait`` seconds, then
    twice that, …; the last failure is raised as itself.

    Use as ``for attempt in retrying(...): with attempt: call()``.
    """
    return Retrying(
        retry=retry_if_exception_type(on),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=first_wait, max=30 * first_wait),
        before_sleep=before_sleep_log(_log, logging.DEBUG),
        reraise=True,
    )
