"""Named locks in the store (``store/locks.py``) between real OS processes, on both stores: one
holder at a time, a try that fails while held, names independent, a SIGKILLed holder's lock free
again; and a repository's intake lock seen by a second host (its own ``LOOPLINE_HOME``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from store.db import Database
from store.locks import held, key
from tests.conftest import ROOT, Project, make_settings
from tests.test_intake import deliver
from workers.intake import Busy, prepare_run
from workers.locks import intake_lock
from workers.relay import intake_busy

#: A holder: takes ``name`` (waiting, or trying once), notes it in ``log``, and keeps it until
#: ``release`` exists (each of ``rounds`` times, after ``go`` exists).
HOLDER = """
import os, sys, time
from pathlib import Path
from store.db import Database
from store.locks import held
url, name, log, go, release, rounds, mode = sys.argv[1:]
db = Database(url)
db.engine.connect().close()  # connected (PostgreSQL) before the go, so all start together
Path(f"{go}-{os.getpid()}").touch()
while not Path(go).exists():
    time.sleep(0.01)
for _ in range(int(rounds)):
    with held(db, name, wait=mode == "wait") as mine:
        with open(log, "a") as f:
            f.write(f"enter {os.getpid()} {mine}\\n")
        while not Path(release).exists():
            time.sleep(0.01)
        time.sleep(0.02)
        with open(log, "a") as f:
            f.write(f"exit {os.getpid()}\\n")
"""


def holder(
    url: str, name: str, tmp: Path, *, rounds: int = 1, mode: str = "wait", go: bool = True
) -> subprocess.Popen[bytes]:
    if go:
        (tmp / "go").touch()
    args = [url, name, str(tmp / "log"), str(tmp / "go"), str(tmp / "release"), str(rounds), mode]
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def wait_for(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def lines(tmp: Path) -> list[str]:
    path = tmp / "log"
    return path.read_text().splitlines() if path.exists() else []


def free(db: Database, name: str) -> bool:
    with held(db, name, wait=False) as mine:
        return mine


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_one_holder_at_a_time_across_processes(
    db: Database, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Three processes take one name ten times each, all at once: entries and exits never
    interleave (each holds it 20 ms, long enough to see another enter if it could)."""
    (tmp_path / "release").touch()  # nobody waits to be let go; they only contend
    procs += [holder(db.url, "intake-churn", tmp_path, rounds=10, go=False) for _ in range(3)]
    wait_for(lambda: all((tmp_path / f"go-{p.pid}").exists() for p in procs))
    (tmp_path / "go").touch()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    log = lines(tmp_path)
    assert len(log) == 60
    for enter, exit_ in zip(log[::2], log[1::2], strict=True):
        pid = enter.split()[1]
        assert enter == f"enter {pid} True" and exit_ == f"exit {pid}", log
    assert len({line.split()[1] for line in log}) == 3


def test_a_try_fails_while_another_process_holds_it(
    db: Database, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(holder(db.url, "status-7", tmp_path))
    wait_for(lambda: lines(tmp_path) == [f"enter {procs[0].pid} True"])
    assert not free(db, "status-7")
    assert free(db, "status-8") and free(db, "intake-churn")  # other names are not held
    # Another process trying once is refused and goes on; so is a second block in this one.
    tried = tmp_path / "tried"
    tried.mkdir()
    procs.append(holder(db.url, "status-7", tried, mode="try"))
    (tried / "release").touch()
    assert procs[1].wait(timeout=60) == 0
    assert lines(tried) == [f"enter {procs[1].pid} False", f"exit {procs[1].pid}"]
    with held(db, "status-8") as mine, held(db, "status-8", wait=False) as again:
        assert mine and not again
    # A waiter blocks until the holder lets go, then has it.
    entered = threading.Event()

    def wait_then_hold() -> None:
        with held(db, "status-7") as mine:
            assert mine
            entered.set()

    waiter = threading.Thread(target=wait_then_hold)
    waiter.start()
    assert not entered.wait(0.5)
    (tmp_path / "release").touch()
    assert entered.wait(30)
    waiter.join(30)
    assert procs[0].wait(timeout=30) == 0 and free(db, "status-7")


def test_a_killed_holders_lock_is_free_again(
    db: Database, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL runs no cleanup: PostgreSQL drops the dead session's locks, the kernel its flock."""
    procs.append(holder(db.url, "intake-churn", tmp_path))
    wait_for(lambda: bool(lines(tmp_path)))
    assert not free(db, "intake-churn")
    os.kill(procs[0].pid, signal.SIGKILL)
    assert procs[0].wait(timeout=30) == -signal.SIGKILL
    wait_for(lambda: free(db, "intake-churn"), seconds=10)
    assert lines(tmp_path) == [f"enter {procs[0].pid} True"]  # it never got to let go


def test_names_are_checked_and_keys_stable() -> None:
    with pytest.raises(ValueError, match="bad lock name"):
        with held(Database("sqlite:////nowhere/x.db"), "../../etc/passwd"):
            pass
    # Stable across processes (not Python's salted hash()), and a signed 64-bit key.
    code = "from store.locks import key; print(key('intake-churn'))"
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"},
    )  # fmt: skip
    assert int(other.stdout) == key("intake-churn") != key("intake-churm")
    assert -(2**63) <= key("intake-churn") < 2**63


@contextmanager
def other_host(url: str) -> Iterator[Database]:
    database = Database(url)  # its own engine and connections, as another host's would be
    try:
        yield database
    finally:
        database.dispose()


def test_an_intake_on_one_host_holds_off_the_others(db: Database, tmp_path: Path, project: Project) -> None:
    """Two hosts with homes of their own and one store: while host A's intake of a repository
    runs, host B's relay sees it busy and B's intake of that repository goes back (``Busy``)."""
    repos = (project.repo_config(),)
    a, b = (
        make_settings(tmp_path / "a", repos, db_url=db.url),
        make_settings(tmp_path / "b", repos, db_url=db.url),
    )
    assert a.home != b.home
    first = project.head()
    after = project.commit({"app/x.py": "X = 3\n"})
    project.push()
    delivery = deliver(db, project, first, after)
    with other_host(db.url) as db_b:
        with intake_lock(db, "churn") as mine:  # host A's intake is under way
            assert mine
            assert intake_busy(db_b, "churn") and not intake_busy(db_b, "other")
            with pytest.raises(Busy):
                prepare_run(b, db_b, [delivery])
            assert not (b.home / "mirrors").exists()  # B fetched nothing
        assert not intake_busy(db_b, "churn")
        prepared = prepare_run(b, db_b, [delivery])
        assert prepared.run_id is not None and prepared.stages
        assert not intake_busy(db, "churn")  # B's intake let go of it
