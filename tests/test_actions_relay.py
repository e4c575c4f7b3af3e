"""Human actions over HTTP and the relay that turns stored state into broker messages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pipelines.events import DataObject, Event
from service import create_app
from service.state import loopline
from store.db import Database
from store.deliveries import record_delivery
from store.models import Delivery, Run, Stage, utcnow
from store.schedule import Due
from tests.conftest import make_settings
from workers.relay import relay_once

TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}


class Recorder:
    """A publisher that keeps what the relay would send to Celery."""

    def __init__(self) -> None:
        self.intakes: list[list[str]] = []
        self.resumed: list[tuple[int, str]] = []
        self.prepared: list[int] = []
        self.statuses: list[int] = []

    def intake(self, delivery_ids: list[str]) -> None:
        self.intakes.append(sorted(delivery_ids))

    def stage(self, due: Due) -> None:
        self.resumed.append((due.run_id, due.stage))

    def prepare(self, run_id: int) -> None:
        self.prepared.append(run_id)

    def commit_status(self, run_id: int) -> None:
        self.statuses.append(run_id)


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    app = create_app(
        {"settings": make_settings(tmp_path, db_url=db_url, api_token="s3cret"), "TESTING": True}
    )
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def db_of(client: FlaskClient) -> Database:
    with client.application.app_context():
        return loopline().db


def waiting_run(db: Database) -> int:
    stages = ["unit_tests", "integration_tests", "approval", "deploy"]
    status = ["succeeded", "succeeded", "awaiting_approval", "queued"]
    with db.session() as s:
        run = Run(
            repository="churn",
            ref="refs/heads/main",
            commit="c" * 40,
            trigger="push",
            kinds=["app_code"],
            plan=stages,
            status="awaiting_approval",
            dedupe_key=f"k{utcnow().timestamp()}",
            model_version=3,
            workspace="/nonexistent/worktree",
        )
        s.add(run)
        s.flush()
        for i, (name, st) in enumerate(zip(stages, status, strict=True)):
            s.add(Stage(run_id=run.id, name=name, position=i, status=st))
        return run.id


def test_approve_resumes_the_remaining_stages(client: FlaskClient, tmp_path: Path) -> None:
    db = db_of(client)
    run_id = waiting_run(db)
    answer = client.post(f"/api/runs/{run_id}/approve", json={"comment": "looks good"}, headers=TOKEN)
    assert answer.status_code == 200 and answer.json["status"] == "queued"
    approval = next(s for s in answer.json["stages"] if s["name"] == "approval")
    assert approval["status"] == "succeeded"
    assert approval["detail"]["by"] == "ada" and approval["detail"]["comment"] == "looks good"
    assert approval["detail"]["commit"] == "c" * 40 and approval["detail"]["model_version"] == 3
    recorder = Recorder()
    settings = make_settings(tmp_path)
    assert relay_once(settings, db, recorder) == 1
    assert recorder.resumed == [(run_id, "deploy")]  # the next stage is due: published from the store
    assert relay_once(settings, db, recorder) == 0  # claimed once, never twice
    again = client.post(f"/api/runs/{run_id}/approve", headers=TOKEN)
    assert again.status_code == 409 and again.json["error"] == "invalid_state"


def test_reject_ends_the_run(client: FlaskClient) -> None:
    run_id = waiting_run(db_of(client))
    answer = client.post(f"/api/runs/{run_id}/reject", json={"comment": "not today"}, headers=TOKEN).json
    assert answer["status"] == "failed" and answer["reason"] == "rejected by ada: not today"
    assert [s["status"] for s in answer["stages"]] == ["succeeded", "succeeded", "failed", "skipped"]


def test_cancel(client: FlaskClient) -> None:
    run_id = waiting_run(db_of(client))
    answer = client.post(f"/api/runs/{run_id}/cancel", headers=TOKEN).json
    assert answer["status"] == "cancelled" and answer["stages"][-1]["status"] == "cancelled"
    assert client.post(f"/api/runs/{run_id}/cancel", headers=TOKEN).status_code == 409


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "bad_token"),
        ({"Authorization": "Bearer wrong"}, 401, "bad_token"),
        ({"Authorization": "s3cret"}, 200, None),  # a bare token is accepted too
    ],
)
def test_token(client: FlaskClient, headers: dict[str, str], status: int, code: str | None) -> None:
    run_id = waiting_run(db_of(client))
    answer = client.post(f"/api/runs/{run_id}/approve", headers=headers)
    assert answer.status_code == status and answer.json.get("error") == code


def test_actions_disabled_without_a_token(tmp_path: Path) -> None:
    app = create_app({"settings": make_settings(tmp_path), "TESTING": True})
    answer = app.test_client().post("/api/runs/1/approve", headers=TOKEN)
    assert answer.status_code == 403 and answer.json["error"] == "actions_disabled"
    assert app.test_client().post("/api/runs/999/cancel").status_code == 403
    with app.app_context():
        loopline().db.dispose()


def test_unknown_run(client: FlaskClient) -> None:
    assert client.post("/api/runs/999/approve", headers=TOKEN).status_code == 404


def test_data_drops_are_debounced_into_one_intake(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # no mirror yet: the default debounce of 30 s applies
    ids = []
    for i in range(150):  # more than one relay page: a batch is still seen whole
        event = Event(
            type="data",
            repository="churn",
            objects=(DataObject(store="folder", bucket="/lake", key=f"f{i}.csv", etag=str(i)),),
        )
        ids.append(
            record_delivery(
                db,
                provider="folder",
                delivery_id=f"churn:{i}",
                body=str(i).encode(),
                repository="churn",
                event=event,
            ).event_id
        )
    push = Event(type="push", repository="churn", ref="refs/heads/main", before="a" * 40, after="b" * 40)
    push_id = record_delivery(
        db, provider="git", delivery_id="p", body=b"p", repository="churn", event=push
    ).event_id
    recorder = Recorder()
    now = utcnow()
    assert relay_once(settings, db, recorder, now=now) == 1  # the push goes at once
    assert recorder.intakes == [[push_id]]
    assert relay_once(settings, db, recorder, now=now + timedelta(seconds=10)) == 0  # still within 30 s
    assert relay_once(settings, db, recorder, now=now + timedelta(seconds=31)) == 1
    assert recorder.intakes[-1] == sorted(ids)  # one run's worth of files
    with db.session() as s:
        assert {d.status for d in s.query(Delivery).all()} == {"dispatched"}


class Broken(Recorder):
    def intake(self, delivery_ids: list[str]) -> None:
        raise ConnectionError("broker down")


def test_a_failed_publish_leaves_the_delivery_pending(db: Database, tmp_path: Path) -> None:
    push = Event(type="push", repository="churn", ref="refs/heads/main", before="a" * 40, after="b" * 40)
    record_delivery(db, provider="git", delivery_id="p", body=b"p", repository="churn", event=push)
    assert relay_once(make_settings(tmp_path), db, Broken()) == 0
    with db.session() as s:
        assert s.query(Delivery).one().status == "pending"
    recorder = Recorder()
    assert relay_once(make_settings(tmp_path), db, recorder) == 1  # the next pass delivers it


def test_cli_approve_and_errors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from loopline.cli import main

    env = {"LOOPLINE_HOME": str(tmp_path / "home"), "LOOPLINE_CONFIG": "", "USER": "grace"}
    db = Database(f"sqlite:///{tmp_path / 'home' / 'loopline.db'}")
    db.migrate()
    run_id = waiting_run(db)
    runner = CliRunner()
    done = runner.invoke(main, ["approve", str(run_id), "--comment", "ship it"], env=env)
    assert done.exit_code == 0, done.output
    assert "QUEUED" in done.output and "✓ approval" in done.output
    again = runner.invoke(main, ["approve", str(run_id)], env=env)
    assert again.exit_code == 1 and "not awaiting approval" in again.output
    assert runner.invoke(main, ["approve", "999"], env=env).exit_code == 1
    db.dispose()


def test_deliveries_a_broker_lost_are_requeued(db: Database, tmp_path: Path) -> None:
    from workers.reconcile import intake_task_id, reconcile

    settings = make_settings(tmp_path)
    push = Event(type="push", repository="churn", ref="refs/heads/main", before="a" * 40, after="b" * 40)
    record_delivery(db, provider="git", delivery_id="lost", body=b"l", repository="churn", event=push)
    recorder = Recorder()
    assert relay_once(settings, db, recorder) == 1  # published … and lost by the broker
    later = utcnow() + timedelta(seconds=settings.lease_seconds + 1)
    assert reconcile(settings, db, set()) == 0  # too recent to call lost
    assert reconcile(settings, db, {intake_task_id(recorder.intakes[0])}, now=later) == 0  # still waiting
    assert reconcile(settings, db, set(), now=later) == 1  # neither waiting nor heard of: lost
    assert relay_once(settings, db, recorder) == 1
    assert recorder.intakes[0] == recorder.intakes[1]
