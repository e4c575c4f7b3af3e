"""Loopline across hosts without a shared filesystem: releases registered under a reachable
address, a running stage's log served by a web process that cannot read the worker's disk."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from sqlalchemy import update

from service import create_app
from store.db import Database
from store.models import Run, Stage
from tests.conftest import ROOT, make_settings
from tests.release_helpers import ROWS, constant_model, register
from workers import livelog, serving


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
