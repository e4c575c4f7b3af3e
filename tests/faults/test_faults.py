"""Fault injection with real processes, Jepsen-style: the Procfile's web, worker, trainer and beat
on a Redis of the suite's own, the sample project trained by real ``dvc repro``; each test injects
one fault and then accounts for every acknowledged delivery: it ends terminal (its run too), and no
model version is registered, nor a release started, twice by one run.

The tests share one cluster and run in order (each builds on what the previous deployed). Each one
prints, and appends to ``$LOOPLINE_FAULT_TIMES`` (default: ``fault-times.txt`` in the suite's
temporary directory), the seconds from the fault (or the restart) to the last terminal state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import func, select

from loopline.broker import redis_executable
from loopline.hook import install_hook
from store.db import Database
from store.lifecycle import TERMINAL
from store.models import Delivery, Deployment, ModelVersion, Run, Stage
from tests.conftest import Project, git
from workers.process import terminate
from workers.serving import free_port

pytestmark = pytest.mark.e2e
SECRET = "faults-secret"
#: Short leases so that a dead worker is noticed in seconds (30 s in production).
LEASE_SECONDS = 4
CHEAP = 'python -c "print(1)"'
TIMES: list[tuple[str, float]] = []
#: The Procfile's processes (web, worker, trainer, beat).
PROCFILE = {
    "web": ["gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--bind"],
    "worker": ["celery", "-A", "workers.celery_app", "worker", "-Q", "default", "-c", "2",
               "-n", "default@%h", "--relay", "--loglevel", "INFO"],
    "trainer": ["celery", "-A", "workers.celery_app", "worker", "-Q", "training", "-c", "1",
                "-n", "training@%h", "--no-relay", "--loglevel", "INFO"],
    "beat": ["celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO", "--schedule"],
}  # fmt: skip


class Cluster:
    """Loopline as the Procfile runs it, with handles to break each part."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.tmpfs = _mount_tmpfs(self.home, "900m")
        self.logs = root / "logs"
        self.logs.mkdir()
        self.project = Project(root)
        self._cheapen()
        self.hang = _Hang()
        self.refused_port = free_port()
        self.redis_port, self.web_port = free_port(), free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.revived: list[str] = []
        config = root / "loopline.yaml"
        repos: list[dict[str, Any]] = [
            {"name": "churn", "url": str(self.project.remote), "branches": ["main"]},
            {"name": "hangs", "url": f"http://127.0.0.1:{self.hang.port}/hangs.git"},
            {"name": "refused", "url": f"http://127.0.0.1:{self.refused_port}/refused.git"},
        ]
        for repo in repos:
            repo.update(provider="git", match=repo["name"], secret_env="HOOK_SECRET")
        config.write_text(yaml.safe_dump({"repositories": repos}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
        self.env = env | {
            "LOOPLINE_HOME": str(self.home),
            "LOOPLINE_CONFIG": str(config),
            "LOOPLINE_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LOOPLINE_API_TOKEN": "faults-token",
            "LOOPLINE_LEASE_SECONDS": str(LEASE_SECONDS),
            "HOOK_SECRET": SECRET,
        }
        self.db = Database(f"sqlite:///{self.home / 'loopline.db'}")
        self.db.migrate()

    def _cheapen(self) -> None:
        """The sample project's own tests are not what is tested here: cheap commands for them."""
        path = self.project.work / "loopline.yml"
        text = path.read_text()
        text = text.replace('"pytest -q tests/unit"', f"'{CHEAP}'").replace(
            '"pytest -q tests/integration"', f"'{CHEAP}'"
        )
        self.project.commit({"loopline.yml": text}, "cheap tests")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # -- processes ---------------------------------------------------------------------------
    def start_redis(self, *, aof: bool = False) -> None:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        argv = [redis_executable(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes" if aof else "no", "--appendfsync", "always", "--dir", str(data)]
        self.redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: _port_open(self.redis_port), 10, "redis did not start")

    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", *PROCFILE[name]]
        if name == "web":
            argv += [f"127.0.0.1:{self.web_port}", "service:create_app()"]
        elif name == "beat":
            argv.append(str(self.home / "celerybeat-schedule"))
        log = self.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        if name == "web":
            _until(lambda: _healthy(self.url), 30, "web did not come up")
        elif name in ("worker", "trainer"):
            _until(lambda: b"ready." in log.read_bytes()[offset:], 60, f"{name} did not come up")

    def revive(self) -> None:
        """What the Procfile's supervisor does: start again a process that exited (a worker's main
        process can die of a broker restart: kombu 5.7 raises while it restores unacked messages)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                print(f"supervisor: {name} exited with {proc.returncode}; starting it again", file=sys.stderr)
                self.revived.append(name)
                self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL the process and every child of it (its session): the whole of it is lost."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it died of the fault already
            pass
        proc.wait()

    def stop(self) -> None:
        with self.db.session() as s:
            pids = [p for p in s.scalars(select(Deployment.pid)) if p]
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for name in list(self.procs):
            self.kill(name)
        if self.redis is not None:
            terminate(self.redis)
        self.hang.close()
        self.db.dispose()
        if self.tmpfs:  # keep the store and the stage logs for a post-mortem
            for path in [self.home / "logs", *self.home.glob("loopline.db*")]:  # the WAL too
                subprocess.run(["cp", "-a", str(path), str(self.logs / f"home-{path.name}")], check=False)
            subprocess.run(["umount", "-l", str(self.home)], check=False)

    # -- traffic -----------------------------------------------------------------------------
    def push(self, files: dict[str, str], message: str = "change") -> str:
        """Commit and push (the installed hook delivers the push); returns the event id."""
        self.project.commit(files, message)
        out = self.project.push(env={"HOOK_SECRET": SECRET})
        assert "accepted" in out, out
        return out.split("(")[-1].split(")")[0]

    def deliver(
        self, repository: str, before: str, after: str, ref: str = "refs/heads/main"
    ) -> requests.Response:
        """What the post-receive hook sends, signed."""
        body = json.dumps({"repository": repository, "ref": ref, "before": before, "after": after}).encode()
        mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Loopline-Delivery": str(uuid.uuid4()),
            "X-Loopline-Signature-256": "sha256=" + mac,
        }
        return requests.post(f"{self.url}/hooks/git", data=body, headers=headers, timeout=10)

    def stage_of(self, event_id: str, name: str) -> Stage | None:
        with self.db.session() as s:
            run_id = s.scalar(select(Delivery.run_id).where(Delivery.id == event_id))
            if run_id is None:
                return None
            return s.scalars(select(Stage).where(Stage.run_id == run_id, Stage.name == name)).one_or_none()

    def wait_running(self, event_id: str, name: str, *, pgid: bool = False, timeout: float = 120) -> Stage:
        """The stage once a worker runs it (and, with ``pgid``, once its command started)."""
        found: list[Stage] = []

        def running() -> bool:
            stage = self.stage_of(event_id, name)
            if stage is not None and stage.status == "running" and (stage.pgid or not pgid):
                found.append(stage)
                return True
            return False

        _until(running, timeout, f"stage {name} of event {event_id} never ran")
        return found[-1]

    def settle(self, event_ids: list[str], since: float, fault: str, timeout: float = 150) -> float:
        """Wait until every acknowledged delivery is terminal, and its run and its run's stages
        too; record and return the seconds since ``since`` (the fault)."""
        deadline = time.monotonic() + timeout
        pending = list(event_ids)
        while pending and time.monotonic() < deadline:
            self.revive()
            pending = [e for e in pending if not self._terminal(e)]
            if pending:
                time.sleep(0.25)
        took = time.monotonic() - since
        if pending:
            raise AssertionError(
                f"{fault}: {len(pending)} acknowledged deliveries not terminal: {self._describe(pending)}"
            )
        TIMES.append((fault, took))
        line = f"{fault}: {took:.1f} s from the fault to terminal ({len(event_ids)} acknowledged deliveries)"
        print(line, file=sys.stderr)
        with Path(os.environ.get("LOOPLINE_FAULT_TIMES", self.root / "fault-times.txt")).open("a") as out:
            out.write(line + "\n")
        self.exactly_once()
        return took

    def _terminal(self, event_id: str) -> bool:
        answer = requests.get(f"{self.url}/api/events/{event_id}", timeout=5).json()
        if answer["status"] not in ("processed", "failed"):
            return False
        with self.db.session() as s:
            for run_id in answer["run_ids"]:
                run = s.get(Run, run_id)
                if run is None or run.status not in TERMINAL:
                    return False
                if any(st.status not in TERMINAL for st in run.stages):
                    return False
        return True

    def _describe(self, event_ids: list[str]) -> list[Any]:
        out = []
        for event_id in event_ids:
            answer = requests.get(f"{self.url}/api/events/{event_id}", timeout=5).json()
            runs = [requests.get(f"{self.url}/api/runs/{r}", timeout=5).json() for r in answer["run_ids"]]
            out.append(
                (
                    answer["status"],
                    [(r["status"], [(st["name"], st["status"]) for st in r["stages"]]) for r in runs],
                )
            )
        return out

    def exactly_once(self) -> None:
        """No run registered two model versions or started two releases."""
        with self.db.session() as s:
            for model in (ModelVersion, Deployment):
                twice = s.execute(
                    select(model.run_id, func.count()).group_by(model.run_id).having(func.count() > 1)
                ).all()
                assert twice == [], f"{model.__tablename__} made twice by one run: {twice}"


class _Hang:
    """A Git host that accepts connections and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def _until(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def _pid_of(stage: Stage) -> int:
    return int((stage.lease_owner or ":0").rpartition(":")[2])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("faults"))
    try:
        c.start_redis()
        for name in ("web", "worker", "trainer", "beat"):
            c.start(name)
        install_hook(c.project.remote, f"{c.url}/hooks/git", "churn", secret_env="HOOK_SECRET")
        yield c
    finally:
        c.stop()
        for fault, took in TIMES:
            print(f"  {fault:<40} {took:6.1f} s", file=sys.stderr)


def _retrain_change(c: Cluster, note: str) -> dict[str, str]:
    path = c.project.work / "src/train/train.py"
    return {"src/train/train.py": path.read_text() + f"\n# {note}\n"}


def test_worker_process_killed_mid_retrain(cluster: Cluster) -> None:
    """The OOM killer takes the trainer's pool process during ``dvc repro``: the message comes back
    at once, the next process sees the lease holder dead, kills the orphaned ``dvc repro`` and runs
    the stage again; the run deploys, its model registered once."""
    event = cluster.push(_retrain_change(cluster, "first"), "train")
    stage = cluster.wait_running(event, "retrain", pgid=True)
    pid, pgid = _pid_of(stage), stage.pgid
    assert pgid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    cluster.settle([event], killed, "worker process SIGKILL mid-retrain")
    assert _gone(pgid)  # the orphaned command was killed, not left to finish unrecorded
    retrain = cluster.stage_of(event, "retrain")
    assert retrain is not None and retrain.status == "succeeded" and retrain.attempt == 2
    with cluster.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1


def test_whole_worker_lost(cluster: Cluster) -> None:
    """The trainer's machine is gone (every process of it): its lease runs out, the reconciler
    queues the stage again, and a new trainer runs it within seconds, not the visibility timeout."""
    event = cluster.push(_retrain_change(cluster, "second"), "train again")
    stage = cluster.wait_running(event, "retrain", pgid=True)
    cluster.kill("trainer")
    os.killpg(stage.pgid or 0, signal.SIGKILL)  # its dvc repro went with the machine
    lost = time.monotonic()
    cluster.start("trainer")  # the supervisor starts a new one
    _until(lambda: _attempt(cluster, event, "retrain") == 2, 60, "the stage was not resumed within a minute")
    print(f"whole trainer lost: its stage resumed after {time.monotonic() - lost:.1f} s", file=sys.stderr)
    cluster.settle([event], lost, "whole trainer lost")


def _attempt(c: Cluster, event_id: str, name: str) -> int:
    """The attempt a worker runs (or ran) of the stage; 0 while it waits in the queue."""
    stage = c.stage_of(event_id, name)
    return stage.attempt if stage is not None and stage.status != "queued" else 0


@pytest.mark.parametrize("aof", [False, True], ids=["empty", "aof"])
def test_broker_restarted(cluster: Cluster, aof: bool) -> None:
    """Redis killed with a run under way and a push in flight, and restarted (empty, or from its
    append-only file): what the broker lost is published again from the store; what it kept is
    stale or runs once."""
    event = cluster.push({"app/version.txt": f"broker {aof}\n"}, "app change")
    _until(lambda: cluster.stage_of(event, "deploy") is not None, 60, "the push made no run")
    before = git("rev-parse", "HEAD", cwd=cluster.project.work)
    cluster.kill_redis()
    crashed = time.monotonic()
    cluster.project.commit({"app/version.txt": f"in flight {aof}\n"})
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=cluster.project.work)  # unsigned hook: 401
    after = git("rev-parse", "HEAD", cwd=cluster.project.work)
    answer = cluster.deliver("churn", before, after)
    assert answer.status_code == 202  # acknowledged without a broker
    cluster.start_redis(aof=True)  # the next crash finds an append-only file
    cluster.settle(
        [event, answer.json()["event_id"]], crashed, f"broker restarted ({'aof' if aof else 'empty'})"
    )


def test_web_crash_under_load(cluster: Cluster) -> None:
    """The web process is killed while pushes arrive; the host retries what was not acknowledged.
    Every acknowledged delivery's run ends (docs-only pushes: skipped or superseded)."""
    commits = []
    for i in range(12):
        before = git("rev-parse", "HEAD", cwd=cluster.project.work)
        cluster.project.commit({f"docs/load-{i}.md": f"{i}\n"})
        commits.append((before, git("rev-parse", "HEAD", cwd=cluster.project.work)))
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=cluster.project.work)
    acknowledged: list[str] = []
    unanswered: list[tuple[str, str]] = []
    lock = threading.Lock()

    def send(pair: tuple[str, str]) -> None:
        try:
            answer = cluster.deliver("churn", *pair)
            ok = answer.status_code == 202
        except requests.RequestException:
            ok = False
        with lock:
            (acknowledged.append(answer.json()["event_id"]) if ok else unanswered.append(pair))

    threads = [threading.Thread(target=send, args=(pair,)) for pair in commits]
    for i, thread in enumerate(threads):
        thread.start()
        if i == len(threads) // 2:
            cluster.kill("web")
    for thread in threads:
        thread.join()
    cluster.start("web")
    restarted = time.monotonic()
    for pair in unanswered:  # the host redelivers what it got no answer for
        answer = cluster.deliver("churn", *pair)
        assert answer.status_code == 202
        acknowledged.append(answer.json()["event_id"])
    assert len(acknowledged) == len(commits)
    cluster.settle(acknowledged, restarted, "web crash under load")


def test_disk_full_while_training(cluster: Cluster) -> None:
    """The disk fills during ``dvc repro`` (and the store's, SQLite's, with it): once it is freed,
    the run ends, whatever the stage managed to record, and Loopline is healthy again."""
    if not cluster.tmpfs:
        pytest.skip("needs a tmpfs for LOOPLINE_HOME (root and `mount -t tmpfs`); not available here")
    event = cluster.push(_retrain_change(cluster, "disk"), "train on a full disk")
    cluster.wait_running(event, "retrain", pgid=True)
    ballast = cluster.home / "ballast"
    subprocess.run(["fallocate", "-l", "2G", str(ballast)], capture_output=True)  # fails past the size…
    with ballast.open("ab") as out:  # … so fill what is left by hand
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    full = time.monotonic()
    time.sleep(3)
    ballast.unlink()
    cluster.settle([event], full, "disk full while training")
    assert requests.get(cluster.url + "/healthz", timeout=5).ok


def test_hanging_and_refusing_git_hosts(cluster: Cluster) -> None:
    """A Git host that accepts and never answers, and one that refuses: the refused delivery fails
    with the reason; the hung intake holds one slot of its own repository only (another
    repository's push runs as usual), the reconciler never republishes it while it is alive, and
    it ends once the host goes away."""
    stuck = [cluster.deliver("hangs", "0" * 40, f"{i:040x}").json()["event_id"] for i in (1, 2)]
    refused = cluster.deliver("refused", "0" * 40, "f" * 40).json()["event_id"]
    started = time.monotonic()
    event = cluster.push({"app/version.txt": "beside a hung host\n"}, "app change")
    cluster.settle([event, refused], started, "push beside hanging/refusing git hosts")
    failed = requests.get(f"{cluster.url}/api/events/{refused}", timeout=5).json()
    assert failed["status"] == "failed"
    time.sleep(max(0.0, 2 * LEASE_SECONDS - (time.monotonic() - started)))
    with cluster.db.session() as s:
        rows = s.execute(select(Delivery.status, Delivery.attempts).where(Delivery.id.in_(stuck))).all()
    assert sorted(rows) == [("dispatched", 1), ("pending", 0)]  # one intake at a time, never sent twice
    cluster.hang.close()  # the host goes away (or git's own timeouts end the wait)
    gone = time.monotonic()
    cluster.settle(stuck, gone, "hanging git host gone")
    for event_id in stuck:
        assert requests.get(f"{cluster.url}/api/events/{event_id}", timeout=5).json()["status"] == "failed"


def test_crash_during_a_canary(cluster: Cluster) -> None:
    """The worker judging a canary is killed mid-trial: the redelivered deploy never starts a
    second release; it judges the same canary on to its verdict."""
    config = (
        (cluster.project.work / "loopline.yml")
        .read_text()
        .replace(
            'command: "python -m app.server"}',
            'command: "python -m app.server", canary_percent: 20, canary_window_seconds: 6, min_requests: 0}',
        )
    )
    event = cluster.push({"loopline.yml": config, "app/version.txt": "canary\n"}, "canary")
    stage = cluster.wait_running(event, "deploy", timeout=90)
    _until(lambda: _canary_of(cluster, stage.run_id) is not None, 60, "no canary started")
    stage = cluster.wait_running(event, "deploy")
    os.kill(_pid_of(stage), signal.SIGKILL)
    killed = time.monotonic()
    cluster.settle([event], killed, "worker killed during a canary")
    with cluster.db.session() as s:
        releases = s.scalars(select(Deployment).where(Deployment.run_id == stage.run_id)).all()
        assert [d.status for d in releases] == ["active"]  # one release, promoted by its verdict
        assert (
            s.scalar(select(func.count()).select_from(Deployment).where(Deployment.status == "canary")) == 0
        )
    deploy = cluster.stage_of(event, "deploy")
    assert deploy is not None and deploy.attempt == 2 and "was started by an earlier attempt" in deploy.log


def _canary_of(c: Cluster, run_id: int) -> int | None:
    with c.db.session() as s:
        return s.scalar(
            select(Deployment.id).where(Deployment.run_id == run_id, Deployment.status == "canary")
        )
