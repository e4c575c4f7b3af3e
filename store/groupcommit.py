"""Group commit for the one write every acknowledgement waits for.

Under load a web process holds several requests at once (the Procfile's gthread workers), and
each used to wait on its own one-row ``INSERT`` and commit: a round trip, a statement and a WAL
flush per webhook. Here the callers of one process share them. The first caller writes at once
(alone, it adds no latency: there is no timer); callers arriving meanwhile queue, and when the
write ends one of them writes everything queued, in one multi-row ``INSERT … RETURNING`` and one
commit. Each caller still returns only once its own row is committed, so a 202 still means "on
disk".

Hand-written for a measured reason: nothing in psycopg, SQLAlchemy or PostgreSQL does this.
PostgreSQL's ``commit_delay`` shares WAL flushes but still costs a round trip and a statement per
row; psycopg's pipeline mode batches one connection's statements, not several threads'. On this
machine (PostgreSQL 15 on loopback, 2 cores) a row written four at a time cost 0.03 ms of client
CPU and 0.04-0.07 ms of server CPU instead of 0.06 and 0.10-0.13 ms alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Runs one statement and returns its rows (``Database.fetch_raw``).
Fetch = Callable[[str, tuple[Any, ...]], Sequence[Sequence[Any]]]


@dataclass(eq=False)
class _Row:
    params: tuple[Any, ...]
    done: bool = False
    inserted: bool = False
    error: BaseException | None = None


class GroupInsert:
    """``INSERT … VALUES {values} … RETURNING <first column>`` shared by concurrent callers.

    ``statement`` holds ``{values}`` where the rows go and returns the first column of each row
    it inserted (an id unique per call, so the caller learns whether its own row went in: a row
    ``ON CONFLICT DO NOTHING`` skipped is not returned). ``row`` is one row's placeholders.
    The queue never holds more rows than the process has threads, so a batch needs no cap.
    """

    def __init__(self, fetch: Fetch, statement: str, row: str) -> None:
        self._fetch = fetch
        self._statement = statement
        self._row = row
        self._sql: dict[int, str] = {}
        self._lock = threading.Condition()
        self._queue: list[_Row] = []
        self._writing = False

    @property
    def waiting(self) -> int:
        """Rows queued behind the write under way."""
        with self._lock:
            return len(self._queue)

    def __call__(self, params: tuple[Any, ...]) -> bool:
        """Insert one row; True if it went in, False if the conflict clause skipped it."""
        mine = _Row(params)
        with self._lock:
            self._queue.append(mine)
            while self._writing and not mine.done:
                self._lock.wait()
            if mine.done:
                return self._outcome(mine)
            self._writing = True
            batch, self._queue = self._queue, []
        try:  # ``mine`` is in the batch: the queue holds every row not yet written
            self._write(batch)
        except BaseException as exc:  # interrupted (a worker's timeout): nobody's row is known
            for row in batch:
                row.error = row.error or exc
            raise
        finally:
            with self._lock:
                for row in batch:
                    row.done = True
                self._writing = False
                self._lock.notify_all()
        return self._outcome(mine)

    def _write(self, batch: list[_Row]) -> None:
        try:
            inserted = {r[0] for r in self._fetch(self._sql_for(len(batch)), _flat(batch))}
        except Exception as exc:  # the database refused the statement
            if len(batch) > 1:  # one caller's bad row must not fail the others: each alone
                for row in batch:
                    self._write([row])
                return
            batch[0].error = exc
            return
        for row in batch:
            row.inserted = row.params[0] in inserted

    def _sql_for(self, count: int) -> str:
        sql = self._sql.get(count)
        if sql is None:  # one text per batch size, so the driver's prepared statements are reused
            sql = self._sql[count] = self._statement.format(values=", ".join([self._row] * count))
        return sql

    @staticmethod
    def _outcome(row: _Row) -> bool:
        if row.error is not None:
            raise row.error
        return row.inserted


def _flat(batch: list[_Row]) -> tuple[Any, ...]:
    return tuple(p for row in batch for p in row.params)
