"""Group commit of the acknowledgement's write (store/groupcommit.py), on SQLite and PostgreSQL:
concurrent callers share statements, and each learns its own row's fate."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from pipelines.events import Event
from store.db import Database, StoreUnavailable
from store.deliveries import record_delivery
from store.groupcommit import GroupInsert
from store.models import Delivery, Probe

PUSH = Event(type="push", repository="churn", ref="refs/heads/main", before="b" * 40, after="a" * 40)
PROBES = "INSERT INTO probes (name, at) VALUES {values} ON CONFLICT (name) DO NOTHING RETURNING name"
DELIVERIES = (
    "INSERT INTO deliveries (id, provider, delivery_id, body_sha256, repository, event, status, received_at)"
    " VALUES {values} ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING id"
)


class Gated:
    """The real ``fetch_raw``, but the first statement waits until ``queued`` callers wait
    behind it: the test decides how the next batch forms, not the scheduler."""

    def __init__(self, db: Database, queued: int) -> None:
        self.db, self.queued = db, queued
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.writer: GroupInsert | None = None

    def __call__(self, sql: str, params: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        if not self.sizes:
            self.entered.set()
            deadline = time.monotonic() + 30
            while self.writer is not None and self.writer.waiting < self.queued:
                assert time.monotonic() < deadline, "the other callers never queued"
                time.sleep(0.005)
        self.sizes.append(sql.count("?") + sql.count("%s"))
        return self.db.fetch_raw(sql, params)


def _concurrently(
    insert: Callable[[tuple[Any, ...]], bool],
    fetch: Gated,
    first: tuple[Any, ...],
    rest: list[tuple[Any, ...]],
) -> list[bool | Exception]:
    """``first`` starts the write; ``rest`` queue behind it; every caller's outcome, in order."""

    def call(params: tuple[Any, ...]) -> bool | Exception:
        try:
            return insert(params)
        except StoreUnavailable as exc:
            return exc

    with ThreadPoolExecutor(len(rest) + 1) as pool:
        futures: list[Future[bool | Exception]] = [pool.submit(call, first)]
        assert fetch.entered.wait(30)
        futures += [pool.submit(call, p) for p in rest]
        return [f.result(timeout=60) for f in futures]


def test_callers_arriving_during_a_write_share_the_next_statement(db: Database) -> None:
    fetch = Gated(db, queued=5)
    insert = fetch.writer = GroupInsert(fetch, PROBES, "(?, CURRENT_TIMESTAMP)")
    outcomes = _concurrently(insert, fetch, ("row-0",), [(f"row-{i}",) for i in range(1, 6)])
    assert outcomes == [True] * 6
    assert fetch.sizes == [1, 5]  # one statement for the five that waited
    with db.session() as s:
        assert set(s.scalars(select(Probe.name))) == {f"row-{i}" for i in range(6)}


def test_each_caller_learns_whether_its_own_row_went_in(db: Database) -> None:
    """Redeliveries racing their first delivery: exactly one of each id is accepted."""
    body = b'{"same": "body"}'

    def deliver(i: int) -> str:
        return record_delivery(
            db, provider="github", delivery_id=f"d-{i % 5}", body=body, repository="churn", event=PUSH
        ).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(deliver, range(40)))
    assert statuses.count("accepted") == 5 and statuses.count("duplicate") == 35
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 5


def test_a_row_the_database_refuses_fails_only_its_own_caller(db: Database) -> None:
    """A batch the database refuses is written again row by row: the others are stored."""
    fetch = Gated(db, queued=3)
    row = "(?, 'github', ?, 'x', 'churn', ?, 'pending', CURRENT_TIMESTAMP)"
    insert = fetch.writer = GroupInsert(fetch, DELIVERIES, row)
    event = '{"type": "push"}'
    refused = "{not json" if db.dialect == "postgresql" else None  # json type; NOT NULL

    def params(name: str, value: str | None = event) -> tuple[Any, ...]:
        return (uuid.uuid4().hex, name, value)

    outcomes = _concurrently(
        insert, fetch, params("first"), [params("ok-0"), params("bad", refused), params("ok-1")]
    )
    assert outcomes[:2] == [True, True] and outcomes[3] is True
    assert isinstance(outcomes[2], StoreUnavailable)
    assert fetch.sizes[:2] == [3, 9]  # the batch of three was refused, then each row alone
    with db.session() as s:
        assert set(s.scalars(select(Delivery.delivery_id))) == {"first", "ok-0", "ok-1"}


def test_an_error_reaches_its_caller_and_the_writer_recovers(db: Database) -> None:
    calls = 0

    def broken(sql: str, params: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("disk full")
        return db.fetch_raw(sql, params)

    insert = GroupInsert(broken, PROBES, "(?, CURRENT_TIMESTAMP)")
    with pytest.raises(StoreUnavailable, match="disk full"):
        insert(("p1",))
    assert insert(("p1",)) is True and insert(("p1",)) is False
