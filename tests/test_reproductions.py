"""``POST /api/models/<name>/versions/<v>/reproduce`` on both databases: who may ask, what a bad
request gets, idempotency, and the record's life without a rebuild: published once by the relay,
started under a lease, ended by its worker, by a redelivery after its worker died, or by the
reconciler when its lease ran out; a real (tiny) rebuild's whole log served from the object
storage. The rebuild itself through a real Celery worker is in ``tests/test_e2e.py``;
``reproduce`` of the sample project against the store in ``tests/test_ledger.py``."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from pipelines.config import RepoConfig
from service import create_app
from service.state import loopline
from store import reproductions, stagelogs, users
from store.datasets import EMPTY_SHA256
from store.db import Database
from store.lifecycle import IllegalMove, move_reproduction
from store.models import ModelVersion, Reproduction, Run, utcnow
from tests.conftest import git, make_settings
from tests.test_actions_relay import Recorder
from workers import reconcile, relay
from workers.reproduce import RebuildLog, run_requested, workdir
from workers.serving import free_port

TOKEN = {"Authorization": "Bearer boot", "X-Loopline-User": "ada"}


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    repo = RepoConfig(name="churn", provider="git", match="churn", url=str(tmp_path / "remote.git"))
    settings = make_settings(tmp_path, (repo,), db_url=db_url, api_token="boot")
    app = create_app({"settings": settings, "TESTING": True})
    with app.app_context():
        db = loopline().db
    _register(db, 1, repository="churn", dataset={"version": 0, "manifest_sha256": "0" * 64, "files": []})
    _register(db, 2, repository="churn", dataset=None)  # registered before the data ledger
    _register(db, 3, repository="gone", dataset={"version": 1, "manifest_sha256": "1" * 64, "files": []})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def _register(
    db: Database,
    version: int,
    *,
    repository: str,
    dataset: dict[str, Any] | None,
    commit: str = "c" * 40,
    sha256: str = "a" * 64,
) -> None:
    with db.session() as s:
        run = Run(repository=repository, commit=commit, trigger="push", dedupe_key=f"r{version}")
        s.add(run)
        s.flush()
        s.add(
            ModelVersion(
                name="churn",
                version=version,
                run_id=run.id,
                repository=repository,
                commit=commit,
                data_version={},
                params={},
                metrics={"accuracy": 0.9},
                artifact_path="-",
                sha256=sha256,
                dataset=dataset,
            )
        )


def _db(client: FlaskClient) -> Database:
    with client.application.app_context():
        return loopline().db


def _settings(client: FlaskClient) -> Any:
    with client.application.app_context():
        return loopline().settings


def test_asking_for_a_reproduction(client: FlaskClient) -> None:
    url = "/api/models/churn/versions/1/reproduce"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer nope"}).json["error"] == "bad_token"
    viewer = users.add(_db(client), "vic", "viewer")
    denied = client.post(url, headers={"Authorization": f"Bearer {viewer}"})
    assert denied.status_code == 403 and "approver" in denied.json["message"]

    answer = client.post(url, headers=TOKEN)
    assert answer.status_code == 202, answer.json
    record = answer.json
    assert answer.headers["Location"] == record["url"] == f"/api/reproductions/{record['id']}"
    assert (record["model"], record["version"], record["status"], record["requested_by"]) == (
        "churn",
        1,
        "queued",
        "ada",
    )
    assert client.get(record["url"]).json == record
    approver = users.add(_db(client), "ann", "approver")
    second = client.post(url, headers={"Authorization": f"Bearer {approver}"}, json={})
    assert second.status_code == 202 and second.json["id"] != record["id"]
    listed = client.get("/api/models/churn/versions/1/reproductions").json
    assert [r["id"] for r in listed["reproductions"]] == [second.json["id"], record["id"]]
    assert client.get("/api/models/churn/versions/2/reproductions").json["reproductions"] == []


def test_bad_requests_get_a_documented_4xx(client: FlaskClient) -> None:
    def post(path: str, **kwargs: Any) -> tuple[int, str]:
        answer = client.post(path, headers={**TOKEN, **kwargs.pop("headers", {})}, **kwargs)
        return answer.status_code, answer.json["error"]

    assert post("/api/models/nope/versions/1/reproduce") == (404, "not_found")
    assert post("/api/models/churn/versions/9/reproduce") == (404, "not_found")
    assert post(f"/api/models/churn/versions/{2**63}/reproduce") == (404, "not_found")
    assert post("/api/models/churn/versions/-1/reproduce") == (404, "not_found")
    assert post("/api/models/churn/versions/2/reproduce") == (409, "no_lineage")  # before the ledger
    assert post("/api/models/churn/versions/3/reproduce") == (409, "no_lineage")  # unregistered repo
    assert post("/api/models/churn/versions/1/reproduce", json={"x": 1}) == (400, "bad_body")
    assert post("/api/models/churn/versions/1/reproduce", data="{", content_type="application/json") == (
        400,
        "bad_body",
    )
    long_key = {"Idempotency-Key": "k" * 101}
    assert post("/api/models/churn/versions/1/reproduce", headers=long_key) == (400, "bad_header")
    for path in (f"/api/reproductions/{2**63}", "/api/reproductions/999", "/api/reproductions/x"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json["error"] == "not_found", path
    assert client.get(f"/api/models/churn/versions/{2**63}/reproductions").status_code == 404
    assert client.get("/api/models/churn/versions/9/reproductions").json["error"] == "not_found"
    with _db(client).session() as s:
        assert s.query(Reproduction).count() == 0


def test_an_idempotency_key_answers_the_same_reproduction(client: FlaskClient) -> None:
    url, key = "/api/models/churn/versions/1/reproduce", {**TOKEN, "Idempotency-Key": "k-1"}
    first = client.post(url, headers=key)
    again = client.post(url, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    other = client.post("/api/models/churn/versions/3/reproduce", headers=key)
    assert other.status_code == 409 and other.json["error"] == "idempotency_conflict"
    with _db(client).session() as s:
        assert s.query(Reproduction).count() == 1


class Published(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.reproductions: list[tuple[int, str]] = []

    def reproduction(self, reproduction_id: int, task_id: str) -> None:
        self.reproductions.append((reproduction_id, task_id))


class Down(Published):
    def reproduction(self, reproduction_id: int, task_id: str) -> None:
        raise ConnectionError("broker down")


def test_the_relay_publishes_it_and_every_reproduction_ends(client: FlaskClient) -> None:
    db, settings = _db(client), _settings(client)
    rep_id = client.post("/api/models/churn/versions/1/reproduce", headers=TOKEN).json["id"]
    assert relay.relay_once(settings, db, Down()) == 0  # a failed publish: due again
    sent = Published()
    assert relay.relay_once(settings, db, sent) == 1
    assert relay.relay_once(settings, db, sent) == 0  # claimed once
    [(published_id, task_id)] = sent.reproductions
    assert published_id == rep_id and task_id.startswith(f"loopline-reproduction{rep_id}-")  # 2nd try

    # The broker lost it (neither waiting nor started): the reconciler has it published again.
    later = utcnow() + timedelta(minutes=1)
    assert reconcile.reconcile(settings, db, {task_id}, now=later) == 0  # still waiting: kept
    assert reconcile.reconcile(settings, db, set(), now=later) == 1
    relay.relay_once(settings, db, sent)
    new_task = sent.reproductions[-1][1]
    assert new_task != task_id and new_task.startswith(f"loopline-reproduction{rep_id}-")
    assert run_requested(settings, db, rep_id, task_id) == reproductions.STALE  # the lost one, late

    # Started under a lease; a duplicate message while it runs does nothing.
    claim = reproductions.start(db, rep_id, new_task, settings.lease_seconds)
    assert isinstance(claim, reproductions.Claim) and claim.owner == reproductions.owner()
    assert run_requested(settings, db, rep_id, new_task) == reproductions.ALREADY_RUNNING
    assert reproductions.renew(db, claim, settings.lease_seconds)

    # Its lease runs out (its host died): the reconciler ends it, failed, removes its worktree,
    # and the worker's late result is dropped.
    work = workdir(settings, claim)
    work.mkdir(parents=True)
    expired = utcnow() + timedelta(seconds=settings.lease_seconds + 1)
    reconcile.reconcile(settings, db, None, now=expired)
    assert not work.exists()
    record = client.get(f"/api/reproductions/{rep_id}").json
    assert record["status"] == "failed" and "stopped renewing its lease" in record["reason"]
    assert record["finished_at"] and record["started_at"]
    assert not reproductions.renew(db, claim, settings.lease_seconds)
    assert not reproductions.finish(db, claim, "succeeded", reason="late", result={}, log="")
    assert run_requested(settings, db, rep_id, new_task) == "failed"  # a redelivery after its end

    # A worker process killed mid-rebuild: its message comes back (acks_late) and finds the lease
    # holder dead on this host, so the reproduction ends failed rather than running again.
    other = client.post("/api/models/churn/versions/1/reproduce", headers=TOKEN).json["id"]
    relay.relay_once(settings, db, sent)
    other_task = sent.reproductions[-1][1]
    claimed = reproductions.start(db, other, other_task, settings.lease_seconds)
    assert isinstance(claimed, reproductions.Claim)
    # What its command left running (here a sleep in a process group of its own) is killed.
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reproductions.record_pgid(db, claimed, orphan.pid)
    with db.session() as s:
        s.get(Reproduction, other).lease_owner = f"{claimed.owner.rpartition(':')[0]}:{2**22 + 7}"
    left = RebuildLog(settings, other).path  # the log it was writing, on this host
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_text("[loopline] retraining: python train.py\n")
    try:
        assert run_requested(settings, db, other, other_task) == "failed"
        assert orphan.wait(timeout=10) == -signal.SIGKILL
    finally:
        orphan.kill()
    record = client.get(f"/api/reproductions/{other}").json
    assert "worker died" in record["reason"] and record["finished_at"]
    assert not left.exists()  # stored, with why it ended
    assert client.get(f"/api/reproductions/{other}/log").get_data(as_text=True) == (
        "[loopline] retraining: python train.py\n[loopline] its worker died: the reproduction failed\n"
    )

    # Its repository unregistered meanwhile: the worker records why it cannot rebuild it.
    third = client.post("/api/models/churn/versions/1/reproduce", headers=TOKEN).json["id"]
    settings_without = make_settings(settings.home.parent, (), db_url=db.url)
    assert run_requested(settings_without, db, third) == "failed"
    record = client.get(f"/api/reproductions/{third}").json
    assert record["status"] == "failed" and "no longer registered" in record["reason"]
    assert record["result"] is None


# A project whose retrain is cheap: a log longer than the store keeps, an artifact and metrics,
# on Loopline's own interpreter (no environment to build); EXIT is its exit code.
TRAIN = """\
import json, sys
for epoch in range(400):
    print(f"epoch {epoch:03}: " + "x" * 40)
open("model.bin", "wb").write(b"model")
json.dump({"accuracy": 0.9}, open("metrics.json", "w"))
sys.exit(EXIT)
"""
PROJECT = """\
environment: inherit
model: {name: churn, artifact: model.bin, metrics: metrics.json}
stages: {retrain: "python train.py"}
"""


def _tiny_project(remote: Path, *exits: int) -> list[str]:
    """The bare repository the fixture's ``churn`` names, a commit per exit code."""
    work = remote.parent / "tiny"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    commits = []
    for code in exits:
        (work / "loopline.yml").write_text(PROJECT)
        (work / "train.py").write_text(TRAIN.replace("EXIT", str(code)))
        git("add", "-A", cwd=work)
        git("commit", "-qm", f"exit {code}", cwd=work)
        commits.append(git("rev-parse", "HEAD", cwd=work))
    git("clone", "-q", "--bare", str(work), str(remote), cwd=work.parent)
    return commits


def test_a_rebuilds_whole_log_is_served_from_the_object_storage(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer stores the whole log as an object when the rebuild ends and keeps no file: the
    web process, which shares no disk with it, serves it; the record keeps only its tail."""
    db, settings = _db(client), _settings(client)
    ok, failing = _tiny_project(tmp_path / "remote.git", 0, 3)
    empty = {"version": 0, "manifest_sha256": EMPTY_SHA256, "files": []}
    model = hashlib.sha256(b"model").hexdigest()
    _register(db, 4, repository="churn", dataset=empty, commit=ok, sha256=model)
    _register(db, 5, repository="churn", dataset=empty, commit=failing, sha256=model)

    asked = client.post("/api/models/churn/versions/4/reproduce", headers=TOKEN).json
    log_url = f"{asked['url']}/log"
    queued = client.get(log_url)
    assert queued.status_code == 404 and queued.json["error"] == "not_found"  # none yet
    assert run_requested(settings, db, asked["id"]) == "succeeded"
    record = client.get(asked["url"]).json
    assert record["result"]["matches"] and record["result"]["log"] == stagelogs.reproduction(asked["id"])
    whole = client.get(log_url)
    assert whole.status_code == 200 and whole.mimetype == "text/plain"
    text = whole.get_data(as_text=True)
    assert text.startswith("[loopline] worktree at ") and "[loopline] retraining: python train.py" in text
    assert all(f"epoch {n:03}: " in text for n in range(400))
    assert len(record["log"]) == reproductions.LOG_TAIL < len(text) and text.endswith(record["log"])

    # A failing command: its log too, all of it.
    asked = client.post("/api/models/churn/versions/5/reproduce", headers=TOKEN).json
    assert run_requested(settings, db, asked["id"]) == "failed"
    record = client.get(asked["url"]).json
    assert record["reason"] == "the retrain command exited 3" and record["result"]["exit_code"] == 3
    text = client.get(f"{asked['url']}/log").get_data(as_text=True)
    assert "epoch 000: " in text and "epoch 399: " in text and text.endswith(record["log"])

    # Running: no log yet. Ended without rebuilding (nothing written): none at all.
    running = client.post("/api/models/churn/versions/4/reproduce", headers=TOKEN).json["id"]
    assert isinstance(reproductions.start(db, running, None, settings.lease_seconds), reproductions.Claim)
    assert client.get(f"/api/reproductions/{running}/log").status_code == 404
    gone = client.post("/api/models/churn/versions/4/reproduce", headers=TOKEN).json["id"]
    assert run_requested(make_settings(tmp_path, (), db_url=db.url), db, gone) == "failed"
    for missing in (gone, 999, 2**63):
        answer = client.get(f"/api/reproductions/{missing}/log")
        assert answer.status_code == 404 and answer.json["error"] == "not_found", missing

    # The trainer kept no log, and no worktree.
    assert list((settings.home / "logs" / "reproduce").iterdir()) == []
    assert list((settings.home / "reproduce").iterdir()) == []

    # The object storage unreachable (an S3 endpoint nothing listens on): the store's tail, as
    # for a stage's log, or 503 when the store has none; never a 500.
    for key, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    down = make_settings(tmp_path / "down", db_url=db.url, storage_url="s3://nowhere/loopline")
    other = create_app({"settings": down, "TESTING": True}).test_client()
    try:
        tail = other.get(f"/api/reproductions/{asked['id']}/log")
        assert tail.status_code == 200 and tail.get_data(as_text=True) == record["log"]
        nothing = other.get(f"/api/reproductions/{gone}/log")
        assert nothing.status_code == 503 and nothing.json["error"] == "storage_unavailable"
    finally:
        _db(other).dispose()


def test_the_lifecycle_is_declared_once() -> None:
    rep = Reproduction(status="succeeded")
    with pytest.raises(IllegalMove):
        move_reproduction(rep, "running")
    rep = Reproduction(status="queued")
    with pytest.raises(IllegalMove):
        move_reproduction(rep, "succeeded")  # never without running
    move_reproduction(rep, "running")
    move_reproduction(rep, "failed", reason="x")
    assert rep.finished_at is not None and rep.lease_owner is None


def test_remote_reproduce_says_in_one_line_when_the_server_is_unreachable() -> None:
    from click.testing import CliRunner

    from loopline.cli import main

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    answer = CliRunner().invoke(main, ["models", "reproduce", "churn", "1", "--remote", url])
    assert answer.exit_code == 1 and f"cannot reach {url}" in answer.output
