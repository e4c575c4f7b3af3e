"""The root of Loopline's own errors.

Every error Loopline raises on purpose (a bad config, a refused action, a failed git call, an
unreachable store) derives from :class:`LooplineError`, so an edge (the CLI, a task) can tell a
user's problem, reported as one line, from a bug, which must keep its traceback.
"""

from __future__ import annotations


class LooplineError(Exception):
    """An expected failure whose message says what went wrong and where; no traceback needed."""
