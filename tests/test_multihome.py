"""Loopline across hosts without a shared filesystem: releases registered under a reachable
address, a running stage's log served by a web process that cannot read the worker's disk."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import select, update

from service import create_app
from store.blobs import BlobError
from store.db import Database
from store.models import Deployment, Run, Stage
from tests.conftest import ROOT, SYSTEM_REDIS, Project, git, make_settings
from tests.release_helpers import ROWS, constant_model, register
from workers import artifacts, asks, livelog, releases, runner, serving


def test_a_release_registered_under_another_address_listens_there(tmp_path: Path) -> None:
    """``LOOPLINE_SERVING_ADDRESS``: the URL names it and the server listens beyond 127.0.0.1."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    mv = register(db, tmp_path / "home", "m", 1, constant_model(1))
    server = serving.start(
        cwd=ROOT,
        command=None,
        model_path=Path(mv.artifact_path),
        sha256=mv.sha256,
        log_file=tmp_path / "server.log",
        address="127.0.0.2",
    )
    try:
        assert server.url.startswith("http://127.0.0.2:")
        answer = requests.post(f"{server.url}/predict", json={"instances": ROWS[:1]}, timeout=10)
        assert answer.json()["predictions"] == [1]
        assert serving.advertised("10.1.2.3") == "10.1.2.3"  # given as it is; "auto": this host's
    finally:
        serving.stop(server.pid)
        db.dispose()


def test_a_running_stages_log_reaches_a_web_process_on_another_host(tmp_path: Path, db: Database) -> None:
    """The worker copies the log's tail into the store while the stage runs; the web process,
    whose ``LOOPLINE_HOME`` holds no such file, serves it and follows it with the long poll."""
    with db.session() as s:
        run = Run(repository="churn", trigger="push", status="running", dedupe_key="live-log")
        run.stages.append(Stage(name="unit_tests", position=0, status="running"))
        s.add(run)
    worker_log = tmp_path / "worker-home" / "unit_tests.log"
    worker_log.parent.mkdir()
    app = create_app({"settings": make_settings(tmp_path / "web", db_url=db.url), "TESTING": True})
    client = app.test_client()
    url = f"/api/runs/{run.id}/stages/unit_tests/log"
    try:
        with worker_log.open("ab") as fh, livelog.streaming(db, run.id, "unit_tests", worker_log, 1 << 20):
            fh.write(b"collected 3 items\n")
            fh.flush()
            deadline = time.monotonic() + 10
            while client.get(url).data != b"collected 3 items\n" and time.monotonic() < deadline:
                time.sleep(0.1)
            first = client.get(url)
            assert first.data == b"collected 3 items\n"
            offset = first.headers["X-Log-Offset"]
            fh.write(b"3 passed\n")
            fh.flush()
            more = client.get(f"{url}?after={offset}&wait=10")  # the stage runs: the poll waits for more
            assert more.data == b"3 passed\n"
        with db.session() as s:  # a stage that ended is never overwritten by a late copy
            s.execute(update(Stage).where(Stage.run_id == run.id).values(status="succeeded", log="final\n"))
        with worker_log.open("ab") as fh, livelog.streaming(db, run.id, "unit_tests", worker_log, 1 << 20):
            fh.write(b"late\n")
            fh.flush()
            time.sleep(livelog.INTERVAL * 2.5)
        assert client.get(url).data == b"final\n"
    finally:
        app.extensions["gateway"].close()
        app.extensions["loopline"].db.dispose()


def test_a_retired_release_is_stopped_only_by_its_own_host(tmp_path: Path, db: Database) -> None:
    """A pid means nothing on another host: ``reap`` there sends ``loopline.reap`` to the
    release's host queue and leaves the process alone; its own host stops it."""
    broker = redis.Redis.from_url(SYSTEM_REDIS)
    broker.delete(asks.queue("serving-1"))
    mv = register(db, tmp_path / "home", "m", 1, constant_model(1))
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with db.session() as s:
            s.add(Deployment(model_name="m", version=1, run_id=mv.run_id, target="local", pid=proc.pid,
                             host="serving-1", status="retired"))  # fmt: skip
        elsewhere = dataclasses.replace(make_settings(tmp_path / "web", db_url=db.url, host="web-1"),
                                        broker_url=SYSTEM_REDIS)  # fmt: skip
        releases.reap(db, elsewhere, ask_others=False)  # the reconciler's periodic pass
        assert proc.poll() is None and broker.llen(asks.queue("serving-1")) == 0
        releases.reap(db, elsewhere)
        assert proc.poll() is None  # not signalled from another host
        (message,) = broker.lrange(asks.queue("serving-1"), 0, -1)
        assert json.loads(message)["headers"]["task"] == asks.REAP
        own = dataclasses.replace(elsewhere, host="serving-1")
        releases.reap(db, own)  # what the task does on that host
        assert proc.wait(timeout=10) is not None
        with db.session() as s:
            assert s.scalars(select(Deployment.pid)).one() is None
    finally:
        proc.kill()
        proc.wait()
        broker.delete(asks.queue("serving-1"))
        broker.close()


def test_a_host_with_nothing_on_disk_gets_the_worktree_outputs_and_bundle_from_storage(
    tmp_path: Path, project: Project
) -> None:
    """What a stage on another host needs: the run's worktree made from its own mirror, the
    files an earlier stage produced laid in from object storage; a release bundle unpacked."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    storage = (tmp_path / "objects").as_uri()
    first = make_settings(tmp_path / "a", db_url=db.url, storage_url=storage)
    other = make_settings(tmp_path / "b", db_url=db.url, storage_url=storage)
    repo = project.repo_config()
    project.push()
    commit = project.head()
    made = artifacts.worktree(first, db, repo, 7, commit, None, {})
    (made / "models").mkdir(exist_ok=True)
    (made / "models" / "model.pkl").write_bytes(b"trained")
    (made / "params.yaml").write_text("written: by the stage\n")  # the commit has its own copy
    outputs = artifacts.store_outputs(first, made, ["models/model.pkl", "params.yaml", "missing.json"])
    assert list(outputs) == ["models/model.pkl", "params.yaml"]
    there = artifacts.worktree(other, db, repo, 7, commit, None, outputs)
    assert there != made and there.is_relative_to(other.home)
    assert (there / "models" / "model.pkl").read_bytes() == b"trained"
    assert (there / "params.yaml").read_text() == "written: by the stage\n"  # the stage's, not the commit's
    assert (there / "loopline.yml").is_file() and git("rev-parse", "HEAD", cwd=there) == commit
    with pytest.raises(BlobError):  # a path out of the worktree is refused
        artifacts.worktree(other, db, repo, 7, commit, None, {"../escape": outputs["models/model.pkl"]})
    bundle = artifacts.pack(first, made)
    unpacked = artifacts.unpack(other, bundle, other.home / "releases" / "m" / "v1")
    assert (unpacked / "models" / "model.pkl").read_bytes() == b"trained" and (
        unpacked / "loopline.yml"
    ).is_file()
    where = artifacts.location(first, outputs["models/model.pkl"], "model.pkl")
    fetched = artifacts.local(other, where, outputs["models/model.pkl"])
    assert fetched.is_relative_to(other.home) and fetched.read_bytes() == b"trained"
    runner.sweep(other, db)  # run 7 is not in the store: nothing to remove
    assert there.is_dir()
    db.dispose()
