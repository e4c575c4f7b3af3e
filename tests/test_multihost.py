"""Loopline on "hosts" that share no directory: the web process, two default workers, a trainer
and a serving host, each with its own ``LOOPLINE_HOME`` and ``LOOPLINE_HOST``, over PostgreSQL,
Redis and S3 (moto's real server) for artifacts, dataset objects, finished logs and release
bundles; the data lake is an S3 bucket too. Deploys go to the ``serving`` queue, which the trainer
and the serving host take. The only directory the processes share is the session's cache of built
project environments (``LOOPLINE_ENVIRONMENTS``), standing in for a pre-built image.

One cluster, three tests in order: a push deploys, a data drop retrains, logs and lineage are
served by the web process, a rollback switches the gateway back; then a worker host is lost
mid-stage (its processes killed, its disk wiped) and the other worker takes the stage over; then
the host serving production is lost, and the other serving host starts its releases again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import requests
import yaml
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from loopline.hook import install_hook
from store.db import Database
from store.models import Deployment, Stage
from tests.conftest import SYSTEM_REDIS, Project, fresh_database, outside_env
from workers import releases
from workers.serving import free_port

pytestmark = pytest.mark.e2e
SECRET, TOKEN, EVENTS = "multihost-secret", "multihost-token", "multihost-events"
ADMIN = {"Authorization": f"Bearer {TOKEN}", "X-Loopline-User": "ada"}
#: Short leases: a lost worker host is noticed in seconds (30 s in production).
LEASE_SECONDS = 4
CHECK = "python app/check.py"
FAST = 'print("app checks passed")\n'
SLOW = 'import time\ntime.sleep(4)\nprint("app checks passed")\n'
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled", "gate_failed"})
#: name -> (queues, relay): the relay (and its reconciler) beside each default worker.
HOSTS: dict[str, tuple[str, bool] | None] = {
    "web": None,
    "worker-a": ("default", True),
    "worker-b": ("default", True),
    "trainer": ("training,serving", False),  # a serving host too: deploys are pinned to these two
    "server": ("serving", False),
}
SERVING_HOSTS = ("trainer", "server")


@dataclass
class Cluster:
    root: Path
    project: Project
    env: dict[str, str]
    url: str
    db: Database
    s3: Any
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def home(self, host: str) -> Path:
        return self.root / host / "home"

    def start(self, host: str, port: int) -> None:
        spec = HOSTS[host]
        if spec is None:
            argv = ["gunicorn", "--workers", "1", "--threads", "4", "--worker-class", "gthread",
                    "--bind", f"127.0.0.1:{port}", "service:create_app()"]  # fmt: skip
        else:
            queue, relay = spec
            argv = ["celery", "-A", "workers.celery_app", "worker", "-Q", queue, "-c", "1", "-n",
                    f"{host}@%h", "--loglevel", "INFO", "--relay" if relay else "--no-relay"]  # fmt: skip
        env = self.env | {"LOOPLINE_HOME": str(self.home(host)), "LOOPLINE_HOST": host}
        with (self.root / f"{host}.log").open("ab") as out:
            self.procs[host] = subprocess.Popen(
                [sys.executable, "-m", *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def lose(self, host: str) -> None:
        """The host is gone: its processes killed at once, its disk with them."""
        os.killpg(self.procs[host].pid, signal.SIGKILL)
        self.procs[host].wait()
        shutil.rmtree(self.root / host)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not name.startswith("lost"):
                raise AssertionError(f"{name} exited with {proc.returncode}; see {self.root / name}.log")

    def runs(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/runs", timeout=5).json()["runs"]

    def wait_run(self, after: int, timeout: float = 240, until: frozenset[str] = TERMINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            newer = [r for r in self.runs() if r["id"] > after]
            if newer and newer[0]["status"] in until:
                return requests.get(f"{self.url}/api/runs/{newer[0]['id']}", timeout=5).json()
            time.sleep(0.3)
        raise AssertionError(f"no run after #{after} ended within {timeout}s; logs in {self.root}")

    def timings(self, run: dict[str, Any]) -> str:
        """Where a run's time went (printed: this test's cost is watched)."""
        return f"run #{run['id']} ({run['trigger']}): " + ", ".join(
            f"{st['name']} {st['duration_seconds'] or 0:.1f}s" for st in run["stages"]
        )

    def ran_on(self, run_id: int, stage: str) -> list[str]:
        """The hosts whose scratch holds the stage's log file: where it ran."""
        return [h for h in HOSTS if (self.home(h) / "logs" / str(run_id) / f"{stage}.log").is_file()]


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(what)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, example_environment: Path | None) -> Iterator[Cluster]:
    try:
        broker = redis.Redis.from_url(SYSTEM_REDIS, socket_connect_timeout=1)
        broker.flushdb()
        broker.close()
    except redis.RedisError:
        pytest.skip(f"no Redis at {SYSTEM_REDIS}")
    root = tmp_path_factory.mktemp("multihost")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    aws = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    s3.create_bucket(Bucket="loopline")
    s3.create_bucket(Bucket="lake")
    project = Project(root)
    text = (project.work / "loopline.yml").read_text()
    text = text.replace('"pytest -q tests/unit"', f'"{CHECK}"').replace(
        '"pytest -q tests/integration"', "'python -c \"print(1)\"'"
    )  # the sample project's own tests are not what is tested here
    project.commit({"loopline.yml": text, "app/check.py": FAST}, "cheap tests")
    config = root / "loopline.yaml"
    lake = {"bucket": "lake", "endpoint_url": aws["AWS_ENDPOINT_URL"], "region": "us-east-1",
            "access_key_env": "LAKE_KEY", "secret_key_env": "LAKE_SECRET"}  # fmt: skip
    repo = {"name": "churn", "provider": "git", "match": "churn", "url": str(project.remote),
            "branches": ["main"], "secret_env": "HOOK_SECRET", "data_lake": [{"s3": lake}]}  # fmt: skip
    config.write_text(yaml.safe_dump({"repositories": [repo]}))
    with fresh_database("postgresql", root) as db_url:
        db = Database(db_url)
        db.migrate()
        web_port = free_port()
        env = (
            outside_env()
            | aws
            | {
                "LOOPLINE_CONFIG": str(config),
                "LOOPLINE_DATABASE_URL": db_url,
                "LOOPLINE_BROKER_URL": SYSTEM_REDIS,
                "LOOPLINE_STORAGE_URL": "s3://loopline/objects",
                "LOOPLINE_API_TOKEN": TOKEN,
                "LOOPLINE_EVENT_TOKEN": EVENTS,
                "LOOPLINE_LEASE_SECONDS": str(LEASE_SECONDS),
                "LOOPLINE_SERVING_QUEUE": "serving",
                "HOOK_SECRET": SECRET,
                "LAKE_KEY": "testing",
                "LAKE_SECRET": "testing",
            }
        )
        c = Cluster(root, project, env, f"http://127.0.0.1:{web_port}", db, s3)
        try:
            for name in HOSTS:
                c.start(name, web_port)
            _until(lambda: _up(c), 60, f"the cluster did not come up; logs in {root}")
            install_hook(project.remote, f"{c.url}/hooks/git", "churn", secret_env="HOOK_SECRET")
            yield c
        finally:
            for proc in c.procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in c.procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for name in HOSTS:  # each host's release processes (all on this machine)
                releases.stop_all(db, name)
            db.dispose()
            moto.stop()


def _up(c: Cluster) -> bool:
    c.check()
    try:
        if not requests.get(f"{c.url}/healthz", timeout=1).ok:
            return False
    except requests.RequestException:
        return False
    logs = [(c.root / f"{h}.log").read_text(errors="replace") for h in HOSTS if HOSTS[h]]
    return all("ready." in text for text in logs)


def test_push_deploys_data_retrains_logs_lineage_and_rollback_across_hosts(cluster: Cluster) -> None:
    c = cluster
    push = c.project.push(env={"HOOK_SECRET": SECRET})
    assert "accepted" in push
    run = c.wait_run(0)
    print("\n" + c.timings(run))
    assert run["status"] == "succeeded", run
    assert c.ran_on(run["id"], "retrain") == ["trainer"]  # evaluate and register beside it
    assert c.ran_on(run["id"], "unit_tests")[0] in ("worker-a", "worker-b")
    assert not (c.home("web") / "logs").exists() and not (c.home("web") / "work").exists()

    # a finished log: from object storage, served by a web process whose disk never had it
    log = requests.get(f"{c.url}/api/runs/{run['id']}/stages/retrain/log", timeout=5)
    stored = c.s3.get_object(Bucket="loopline", Key=f"objects/named/logs/{run['id']}/retrain/1.log")
    assert log.status_code == 200 and log.content == stored["Body"].read() and log.content
    with c.db.session() as s:
        stage = s.scalars(select(Stage).where(Stage.run_id == run["id"], Stage.name == "retrain")).one()
        assert stage.log_object == f"logs/{run['id']}/retrain/1.log"
        assert stage.detail and "models/model.pkl" in stage.detail["outputs"]

    # lineage, and the artifact in object storage (evaluate and register found it there)
    v1 = requests.get(f"{c.url}/api/models/churn/versions/1", timeout=5).json()
    assert v1["run_id"] == run["id"] and v1["lineage"]
    assert v1["artifact_path"].startswith("s3://loopline/objects/sha256/") and v1["artifact_path"].endswith(
        "#model.pkl"
    )
    sha = v1["sha256"]
    blob = c.s3.get_object(Bucket="loopline", Key=f"objects/sha256/{sha[:2]}/{sha[2:4]}/{sha}")["Body"].read()
    assert hashlib.sha256(blob).hexdigest() == sha

    # the release: started by the host that ran deploy, bundled, reached through the web's gateway
    with c.db.session() as s:
        dep = s.scalars(select(Deployment).where(Deployment.run_id == run["id"])).one()
        first_host, bundle = dep.host, dep.bundle_sha256
    assert c.ran_on(run["id"], "deploy") == [first_host] and first_host in SERVING_HOSTS and bundle
    answer = requests.post(f"{c.url}/serve/churn/predict", json={"instances": [[14.0] * 30]}, timeout=10)
    assert answer.ok and answer.headers["X-Loopline-Model-Version"] == "1"

    # a data drop into the lake bucket: its worktree on the trainer gets the object from storage
    batch = subprocess.run(
        [sys.executable, "scripts/make_batch.py", "150", str(c.root / "new.csv")],
        cwd=c.project.work, check=True, capture_output=True,
    )  # fmt: skip
    assert batch.returncode == 0
    put = c.s3.put_object(Bucket="lake", Key="new.csv", Body=(c.root / "new.csv").read_bytes())
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "lake"}, "object": {
        "key": "new.csv", "size": (c.root / "new.csv").stat().st_size, "eTag": put["ETag"].strip('"'),
        "sequencer": "0A1"}}}  # fmt: skip
    event = requests.post(f"{c.url}/events/s3", json={"Records": [record]},
                          headers={"Authorization": f"Bearer {EVENTS}"}, timeout=5)  # fmt: skip
    assert event.status_code == 202, event.text
    data = c.wait_run(run["id"])
    print(c.timings(data))
    assert data["status"] == "succeeded" and data["trigger"] == "data", data
    assert c.ran_on(data["id"], "retrain") == ["trainer"]
    v2 = requests.get(f"{c.url}/api/models/churn/versions/2", timeout=5).json()
    assert v2["dataset"]["version"] != v1["dataset"]["version"] and v2["sha256"] != sha
    assert "new.csv" in [f["path"] for f in v2["dataset"]["files"]]
    _until(lambda: _serves(c, "2"), 10, "the gateway does not route to v2")

    # rollback through the web process: the standby v1 serves again
    back = requests.post(f"{c.url}/api/models/churn/rollback", json={"comment": "bad data"}, headers=ADMIN,
                         timeout=5)  # fmt: skip
    assert back.status_code == 200, back.text
    assert [(r["version"], r["status"]) for r in back.json()["releases"]][:1] == [(1, "active")]
    _until(lambda: _serves(c, "1"), 10, "the gateway does not route back to v1")


def _serves(c: Cluster, version: str) -> bool:
    answer = requests.post(f"{c.url}/serve/churn/predict", json={"instances": [[14.0] * 30]}, timeout=10)
    return answer.ok and answer.headers.get("X-Loopline-Model-Version") == version


def test_a_lost_worker_hosts_stage_is_taken_over_by_the_other(cluster: Cluster) -> None:
    c = cluster
    last = c.runs()[0]["id"]
    c.project.commit({"app/check.py": SLOW}, "slow app checks")
    c.project.push(env={"HOOK_SECRET": SECRET})

    def running() -> list[str]:
        newer = [r for r in c.runs() if r["id"] > last]
        return c.ran_on(newer[0]["id"], "unit_tests") if newer else []

    _until(running, 120, "unit_tests did not start")
    (lost,) = running()
    survivor = "worker-b" if lost == "worker-a" else "worker-a"
    started = time.monotonic()
    c.lose(lost)
    c.procs["lost"] = c.procs.pop(lost)
    run = c.wait_run(last, timeout=180)
    took = time.monotonic() - started
    print("\n" + c.timings(run))
    assert run["status"] == "succeeded", run
    stage = next(st for st in run["stages"] if st["name"] == "unit_tests")
    assert stage["attempt"] == 2
    assert c.ran_on(run["id"], "unit_tests") == [survivor]  # its worktree made there, from the mirror
    log = requests.get(f"{c.url}/api/runs/{run['id']}/stages/unit_tests/log", timeout=5).text
    assert "attempt 2" in log and "app checks passed" in log
    print(f"\nlost worker host: run #{run['id']} ended {took:.1f}s after {lost} was lost")


def _servers(directory: str) -> list[int]:
    """The release processes started in ``directory``: each leads a session of its own (started
    with ``start_new_session``, sandboxed or not), whose leader's working directory it is."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == int(entry.name) and os.readlink(entry / "cwd") == directory:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def test_a_lost_serving_hosts_releases_start_again_on_the_other(cluster: Cluster) -> None:
    c = cluster
    with c.db.session() as s:
        live = s.scalars(select(Deployment).where(Deployment.status.in_(("active", "standby")))).all()
        active = next(d for d in live if d.status == "active")
        lost = active.host or ""
        moving = {d.id: (d.version, d.url) for d in live if d.host == lost}
        pids = [d.pid for d in live if d.host == lost and d.pid]
    survivor = next(h for h in SERVING_HOSTS if h != lost)
    assert lost in SERVING_HOSTS and pids
    started = time.monotonic()
    for pid in pids:  # the host's release processes (each in its own session), then the rest of it
        os.killpg(pid, signal.SIGKILL)
    c.lose(lost)
    c.procs["lost-serving"] = c.procs.pop(lost)
    version = str(active.version)
    with pytest.raises(requests.RequestException):
        requests.get(f"{active.url}/healthz", timeout=2)

    _until(lambda: _serves(c, version), 90, f"the gateway does not serve v{version} again; logs in {c.root}")
    took = time.monotonic() - started

    def moved() -> list[Deployment]:
        with c.db.session() as s:
            return [
                d for d in s.scalars(select(Deployment).where(Deployment.id.in_(moving))) if d.host != lost
            ]

    _until(lambda: len(moved()) == len(moving), 60, f"not every release of {lost} moved; logs in {c.root}")
    for dep in moved():
        assert (dep.host, dep.status) == (survivor, "active" if dep.id == active.id else "standby")
        assert dep.url != moving[dep.id][1] and dep.release_dir
        assert dep.release_dir.startswith(str(c.home(survivor)))  # unpacked there from its bundle
        assert dep.moved and dep.moved.startswith(
            f"moved from host {lost} to host {survivor}: host {lost} silent"
        )
        assert _servers(dep.release_dir) == [dep.pid]  # exactly one process runs it
        assert requests.get(f"{dep.url}/healthz", timeout=5).ok
    state = requests.get(f"{c.url}/api/models/churn", headers=ADMIN, timeout=5).json()
    assert {r["id"]: r["host"] for r in state["releases"] if r["id"] in moving} == dict.fromkeys(
        moving, survivor
    )
    print(f"\nlost serving host: {lost}'s {len(moving)} release(s) served by {survivor} {took:.1f}s after")
