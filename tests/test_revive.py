"""A release whose process died while its host stayed alive (a crash, an OOM kill, a kill by
hand) is started again by that host: once, under the release's store lock, never another
host's and never one that runs; a canary fails instead; a serving host's keep-alive does it
(real release processes, on both stores)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from config.settings import Settings
from store import locks
from store.db import Database
from tests.release_helpers import ROWS, real_model, register
from tests.test_hosts import release_row, row, settings_of
from tests.test_releases import builtin_release
from workers import hosts as host_tasks
from workers import releases as processes
from workers import serving


def running_release(
    settings: Settings, db: Database, version: int = 1, **kw: object
) -> tuple[int, serving.Server]:
    """A real release of churn ``version`` started on ``settings.host``, as a deploy records it."""
    mv = register(db, settings.home, "churn", version, real_model())
    (settings.home / f"v{version}").mkdir(parents=True, exist_ok=True)
    directory = builtin_release(settings.home / f"v{version}")
    server = processes.start(settings, directory, artifact=Path(mv.artifact_path), sha256=mv.sha256)
    dep_id = release_row(
        db, host=settings.host, url=server.url, pid=server.pid, run_id=mv.run_id,
        release_dir=str(directory), version=version, **kw,
    )  # fmt: skip
    return dep_id, server


def kill(pid: int) -> None:
    """SIGKILL, as the OOM killer does; returns once the process is gone."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while serving.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not serving.alive(pid)


def predicts(url: str) -> bool:
    answer = requests.post(f"{url}/predict", json={"instances": ROWS}, timeout=5)
    return answer.ok and len(answer.json()["predictions"]) == len(ROWS)


def test_a_killed_release_starts_again_once_and_not_while_another_holds_its_lock(
    tmp_path: Path, db: Database
) -> None:
    a = settings_of(tmp_path, db, "a")
    dep_id, server = running_release(a, db)
    said: list[str] = []
    try:
        assert processes.revive(a, db, said.append) == []  # it runs: left alone
        assert row(db, dep_id).pid == server.pid and said == []

        kill(server.pid)
        with locks.held(db, processes.lock_name(dep_id)):  # another process of this host is at it
            assert processes.revive(a, db, said.append) == []
        assert row(db, dep_id).pid == server.pid and said == []

        assert processes.revive(a, db, said.append) == [dep_id]
        dep = row(db, dep_id)
        assert dep.pid and dep.pid != server.pid and serving.alive(dep.pid)
        assert (dep.host, dep.status, dep.traffic_percent) == ("a", "active", 100)
        died = f"release #{dep_id} (churn v1) process {server.pid} died"
        assert said[-1] == f"{died}: started again at {dep.url}"
        assert sum("is not running: restarting it" in line for line in said) == 1
        assert requests.get(f"{dep.url}/healthz", timeout=5).ok and predicts(dep.url)

        assert processes.revive(a, db, said.append) == []  # a second pass: nothing to do
        assert row(db, dep_id).pid == dep.pid and len(said) == 3
    finally:
        processes.stop_all(db, "a")


def test_a_running_release_and_another_hosts_are_never_touched(tmp_path: Path, db: Database) -> None:
    a = settings_of(tmp_path, db, "a")
    dep_id, server = running_release(a, db)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that meant something on host b only
    elsewhere = release_row(db, host="b", pid=gone.pid, url="http://b.example:9", status="standby", percent=0)
    before = row(db, elsewhere)
    said: list[str] = []
    try:
        assert processes.revive(a, db, said.append) == [] and said == []
        assert row(db, dep_id).pid == server.pid and predicts(server.url)
        after = row(db, elsewhere)
        assert (after.host, after.pid, after.url) == (before.host, before.pid, before.url)
        assert after.status == "standby"
    finally:
        processes.stop_all(db, "a")


def test_a_canary_whose_process_died_fails_like_an_interrupted_one(tmp_path: Path, db: Database) -> None:
    a = settings_of(tmp_path, db, "a")
    stable, _ = running_release(a, db, 1, percent=80)
    canary, server = running_release(a, db, 2, status="canary", percent=20)
    said: list[str] = []
    try:
        kill(server.pid)
        assert processes.revive(a, db, said.append) == []
        dep = row(db, canary)
        assert (dep.status, dep.traffic_percent, dep.pid) == ("failed", 0, None)
        assert dep.moved == f"canary trial interrupted: its process {server.pid} died on host a; failed"
        assert row(db, stable).traffic_percent == 100
        assert said == [
            f"release #{canary} (churn v2) process {server.pid} died: {dep.moved}; "
            "the stable release gets all the traffic"
        ]
        assert not any("restarting" in line for line in said)
    finally:
        processes.stop_all(db, "a")


def test_a_process_its_parent_has_not_reaped_is_dead() -> None:
    """The release's starter (a worker) is not the keep-alive that looks at it: a killed server
    stays a zombie of its starter, which still answers signal 0."""
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time\n"
         "child = subprocess.Popen(['sleep', '60'])\nprint(child.pid, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert starter.stdout is not None
        child = int(starter.stdout.readline())
        assert serving.alive(child)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "Z" not in Path(f"/proc/{child}/stat").read_text().rpartition(")")[2][:3]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child, 0)  # the zombie answers ...
        assert not serving.alive(child)  # ... but is not alive
    finally:
        starter.kill()
        starter.wait()
        assert starter.stdout is not None
        starter.stdout.close()


def test_a_serving_hosts_keep_alive_starts_a_killed_release_again(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    a = settings_of(tmp_path, db, "a")
    dep_id, server = running_release(a, db)
    stop = threading.Event()
    keeper = threading.Thread(
        target=host_tasks.keep_alive, args=(a, db), kwargs={"serves": True, "stop": stop}
    )
    try:
        with caplog.at_level(logging.INFO, logger="workers.hosts"):
            keeper.start()
            kill(server.pid)
            deadline = time.monotonic() + 60  # a heartbeat (LEASE / 3) and a server's start
            while row(db, dep_id).pid == server.pid and time.monotonic() < deadline:
                time.sleep(0.2)
            dep = row(db, dep_id)
            assert dep.pid != server.pid and dep.url and predicts(dep.url)
            stop.set()
            keeper.join(timeout=30)
            assert not keeper.is_alive()
        lines = [r.getMessage() for r in caplog.records]
        assert f"release #{dep_id} (churn v1) process {server.pid} died: started again at {dep.url}" in lines
    finally:
        stop.set()
        keeper.join(timeout=30)
        processes.stop_all(db, "a")
