"""Hosts announce themselves and heartbeat; a lost host's live releases start again on a host
that serves, exactly once, and an alive host's never move (on both stores, with real release
processes). ``tests/test_multihost.py`` loses a whole serving host of a running cluster."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from celery import Celery

from config.settings import Settings
from loopline.report import show_releases
from store import hosts
from store import releases as states
from store.clock import utcnow
from store.db import Database
from store.models import Deployment, Run
from tests.conftest import SYSTEM_REDIS, make_settings
from tests.release_helpers import ROWS, real_model, register
from tests.test_releases import builtin_release
from workers import artifacts, asks, serving
from workers import hosts as host_tasks
from workers import releases as processes
from workers.reconcile import reconcile, waiting_ids

LEASE = 4.0
LONG_AGO = timedelta(seconds=60)


def settings_of(tmp_path: Path, db: Database, host: str, **kwargs: object) -> Settings:
    """Host ``host``: its own home, the object storage every host shares."""
    storage = (tmp_path / "storage").as_uri()
    return make_settings(
        tmp_path / host, db_url=db.url, host=host, storage_url=storage, lease_seconds=LEASE, **kwargs
    )


def release_row(
    db: Database, *, host: str | None, status: str = "active", percent: int = 100, **kw: object
) -> int:
    with db.session() as s:
        run_id = kw.pop("run_id", None)
        if run_id is None:
            run = Run(repository="churn", ref="refs/heads/main", commit="c" * 40, trigger="push",
                      status="succeeded", dedupe_key=f"release-{time.monotonic_ns()}")  # fmt: skip
            s.add(run)
            s.flush()
            run_id = run.id
        dep = Deployment(
            model_name="churn", version=kw.pop("version", 1), run_id=run_id, target=kw.pop("target", "local"),
            url=kw.pop("url", "http://127.0.0.1:9"), pid=kw.pop("pid", 4242), host=host, status=status,
            traffic_percent=percent, **kw,
        )  # fmt: skip
        s.add(dep)
        s.flush()
        return dep.id


def row(db: Database, dep_id: int) -> Deployment:
    with db.session() as s:
        dep = states.get(s, dep_id)
        assert dep is not None
        return dep


def test_hosts_announce_and_beat_and_a_host_serves_if_any_of_its_workers_does(db: Database) -> None:
    start = utcnow() - LONG_AGO
    hosts.announce(db, "trainer", serves=True, now=start)
    hosts.announce(db, "trainer", serves=False, now=start)  # its default worker: still serves
    hosts.announce(db, "worker-a", serves=False, now=start)
    assert hosts.beat(db, "worker-a", serves=False)
    with db.session() as s:
        assert hosts.serving(s, start) == ["trainer"]
        assert hosts.serving(s, start + timedelta(seconds=1)) == []  # its heartbeat is older
        assert hosts.seen_at(s, "nowhere") is None
    assert hosts.others(db, "trainer", start) == ["worker-a"]
    assert hosts.others(db, "trainer", utcnow() - timedelta(seconds=5)) == ["worker-a"]
    hosts.beat(db, "new", serves=True)  # a row written by a heartbeat alone (no announce)
    with db.session() as s:
        assert hosts.serving(s, utcnow() - timedelta(seconds=5)) == ["new"]


def test_only_live_local_releases_of_silent_hosts_are_lost(db: Database) -> None:
    hosts.announce(db, "alive", serves=True)
    hosts.announce(db, "silent", serves=True, now=utcnow() - LONG_AGO)
    alive = release_row(db, host="alive")
    silent = release_row(db, host="silent", status="standby", percent=0)
    unknown = release_row(db, host="unknown")  # never registered: its health check decides
    release_row(db, host="silent", status="retired", percent=0)
    release_row(db, host=None)  # from before hosts were recorded: left alone
    release_row(db, host="silent", target="command")  # the project's deploy command runs it
    with db.session() as s:
        lost = states.on_silent_hosts(s, utcnow() - timedelta(seconds=LEASE))
    assert lost == [(silent, "silent"), (unknown, "unknown")] and alive not in dict(lost)


def test_the_take_over_is_a_compare_and_set_and_never_takes_from_an_alive_host(db: Database) -> None:
    since = utcnow() - timedelta(seconds=LEASE)
    hosts.announce(db, "a", serves=True)
    dep_id = release_row(db, host="a")
    with db.session() as s:
        refused = states.take_over(s, dep_id, lost="a", host="b", since=since)
    assert refused.outcome == "refused" and "host a is alive" in refused.why
    hosts.beat(db, "a", serves=True, now=utcnow() - LONG_AGO)  # a goes silent
    with db.session() as s:
        taken = states.take_over(s, dep_id, lost="a", host="b", since=since)
    assert taken.outcome == "moved", taken
    with db.session() as s:  # a second taker (another reconciler's message) is refused
        again = states.take_over(s, dep_id, lost="a", host="c", since=since)
    assert again == states.TakeOver("refused", f"release #{dep_id} runs on b, not on a")
    dep = row(db, dep_id)
    assert (dep.host, dep.pid, dep.status, dep.traffic_percent) == ("b", None, "active", 100)
    assert dep.moved and dep.moved.startswith("moved from host a to host b: host a silent since ")
    # the process this host started is recorded only while the release still names the host
    # it named when the start began
    with db.session() as s:
        assert not states.record_process(s, dep_id, url="u", pid=1, host="c", release_dir="d", owner="a")
        assert states.record_process(s, dep_id, url="http://b:1", pid=7, host="b", release_dir="d", owner="b")
    assert (row(db, dep_id).url, row(db, dep_id).pid) == ("http://b:1", 7)
    shown = show_releases(db, "churn").splitlines()  # what `loopline models show` prints
    assert shown[1].endswith("http://b:1  on b") and shown[2].strip() == dep.moved
    # b gives it back when it cannot start it: the next pass hands it out again
    with db.session() as s:
        states.give_back(s, dep_id, lost="a", host="b")  # it has a process now: kept
    assert row(db, dep_id).host == "b"


def test_a_lost_hosts_canary_fails_like_an_interrupted_one(db: Database) -> None:
    hosts.announce(db, "a", serves=True, now=utcnow() - LONG_AGO)
    stable = release_row(db, host="b", percent=80)
    canary = release_row(db, host="a", status="canary", percent=20, version=2)
    with db.session() as s:
        taken = states.take_over(s, canary, lost="a", host="b", since=utcnow() - timedelta(seconds=LEASE))
    assert taken.outcome == "aborted" and "canary trial interrupted: host a silent since" in taken.why
    assert (row(db, canary).status, row(db, canary).traffic_percent, row(db, canary).host) == (
        "failed",
        0,
        "a",
    )
    assert row(db, canary).pid is None  # its process went with its host: no one is asked to stop it
    assert row(db, stable).traffic_percent == 100


def test_a_lost_hosts_release_starts_again_on_one_serving_host_and_an_alive_ones_never_moves(
    tmp_path: Path, db: Database
) -> None:
    a, b, c = (settings_of(tmp_path, db, name) for name in ("a", "b", "c"))
    mv = register(db, a.home, "churn", 1, real_model())
    directory = builtin_release(a.home)
    bundle = artifacts.pack(a, directory)
    server = processes.start(a, directory, artifact=Path(mv.artifact_path), sha256=mv.sha256)
    dep_id = release_row(
        db, host="a", url=server.url, pid=server.pid, run_id=mv.run_id, release_dir=str(directory),
        bundle_sha256=bundle,
    )  # fmt: skip
    for settings in (a, b, c):
        hosts.announce(db, settings.host, serves=True)
    said: list[str] = []
    try:
        assert processes.lost(b, db) == []
        hosts.beat(db, "a", serves=True, now=utcnow() - LONG_AGO)  # a stops beating ...
        assert processes.lost(b, db) == []  # ... but its release answers: it stays
        assert processes.take_over(b, db, dep_id, "a", said.append) == "refused"
        assert said[-1] == f"release #{dep_id} answers at {server.url}: left on a"

        hosts.beat(db, "a", serves=True)  # a beats again; its release process dies
        serving.stop(server.pid)
        assert processes.lost(b, db) == []  # its host is alive: never moved
        assert processes.take_over(b, db, dep_id, "a", said.append) == "refused"
        assert row(db, dep_id).host == "a"

        hosts.beat(db, "a", serves=True, now=utcnow() - LONG_AGO)  # now a is lost, its disk too
        shutil.rmtree(a.home / "release")
        assert processes.lost(b, db) == processes.lost(c, db) == [(dep_id, "a")]
        outcomes: list[str] = []
        takers = [
            threading.Thread(
                target=lambda s=s: outcomes.append(processes.take_over(s, db, dep_id, "a", said.append))
            )
            for s in (b, c)
        ]  # two reconcilers' messages at once
        for t in takers:
            t.start()
        for t in takers:
            t.join()
        assert sorted(outcomes) == ["moved", "refused"], said
        dep = row(db, dep_id)
        assert dep.host in ("b", "c") and dep.url != server.url and dep.pid
        winner = b if dep.host == "b" else c
        assert dep.release_dir == str(
            winner.home / "releases" / "churn" / f"v1-release{dep_id}"
        )  # the bundle
        assert dep.moved and dep.moved.startswith(
            f"moved from host a to host {dep.host}: host a silent since"
        )
        assert sum("is not running: restarting it" in line for line in said) == 1  # one start
        answer = requests.post(f"{dep.url}/predict", json={"instances": ROWS}, timeout=5)
        assert answer.ok
        assert processes.lost(b, db) == processes.lost(c, db) == []  # it answers, on an alive host
        assert processes.take_over(c, db, dep_id, "a", said.append) == "refused"  # a late duplicate
        assert row(db, dep_id).pid == dep.pid
    finally:
        for settings in (a, b, c):
            processes.stop_all(db, settings.host)


def test_the_reconciler_asks_the_serving_queue_once_per_lost_release(tmp_path: Path, db: Database) -> None:
    try:
        broker = redis.Redis.from_url(SYSTEM_REDIS, socket_connect_timeout=1)
        broker.flushdb()
    except redis.RedisError:
        pytest.skip(f"no Redis at {SYSTEM_REDIS}")
    settings = replace(
        settings_of(tmp_path, db, "reconciler", serving_queue="serving"), broker_url=SYSTEM_REDIS
    )
    hosts.announce(db, "gone", serves=True, now=utcnow() - LONG_AGO)
    dep_id = release_row(db, host="gone", url=f"http://127.0.0.1:{serving.free_port()}")
    app = Celery("test-reconcile", broker=SYSTEM_REDIS, set_as_current=False)
    try:
        for _ in range(3):  # each pass sees the message still waiting: not sent again
            reconcile(settings, db, waiting_ids(app))
        messages = broker.lrange("serving", 0, -1)
        assert len(messages) == 1 and asks.take_over_id(dep_id, "gone").encode() in messages[0]
        assert b"loopline.take_over" in messages[0]
    finally:
        broker.flushdb()
        broker.close()


def test_a_file_storage_shared_by_several_hosts_is_warned_about_once_at_start(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    hosts.announce(db, "other", serves=False)
    settings = settings_of(tmp_path, db, "me")
    with caplog.at_level(logging.WARNING, logger="workers.hosts"):
        host_tasks.keep_alive(settings, db, serves=True, parent=-1)  # no such parent: returns at once
    warnings = [r.getMessage() for r in caplog.records if "LOOPLINE_STORAGE_URL" in r.getMessage()]
    assert len(warnings) == 1 and "hosts other run too" in warnings[0] and "shared" in warnings[0]
    with db.session() as s:
        assert hosts.serving(s, utcnow() - timedelta(seconds=5)) == ["me"]
    s3 = make_settings(tmp_path, storage_url="s3://bucket/prefix")
    assert host_tasks.shared_storage_warning(s3, ["other"]) is None
    assert host_tasks.shared_storage_warning(settings, []) is None
