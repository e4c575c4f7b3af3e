"""Triggers end in runs like any delivery: manual runs (API and CLI), schedules on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from config.settings import Settings
from loopline.cli import main
from service import create_app
from service.state import loopline
from store import users
from store.db import Database
from store.models import Delivery, Run
from tests.conftest import Project, make_settings
from workers.intake import prepare_run

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path, project: Project, db_url: str) -> Settings:
    return make_settings(tmp_path, (project.repo_config(),), db_url=db_url, api_token=TOKEN)


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    app = create_app({"settings": settings, "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def db_of(client: FlaskClient) -> Database:
    with client.application.app_context():
        return loopline().db


def deliveries(db: Database) -> list[Delivery]:
    with db.session() as s:
        return list(s.query(Delivery).order_by(Delivery.received_at))


def run_of(db: Database, run_id: int | None) -> Run:
    assert run_id is not None
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        _ = run.stages
        return run


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, {}, 401, "bad_token"),
        ({"Authorization": "Bearer nope"}, {}, 401, "bad_token"),
        (AUTH, ["main"], 400, "bad_body"),
        (AUTH, {"branch": "main", "why": "x"}, 400, "bad_body"),
        (AUTH, {"branch": "../etc"}, 400, "bad_body"),
        (AUTH, {"branch": 7}, 400, "bad_body"),
        (AUTH, {"reason": {"nested": 1}}, 400, "bad_body"),
        ({**AUTH, "Idempotency-Key": "k" * 101}, {}, 400, "bad_header"),
    ],
)
def test_manual_run_refuses_bad_requests_and_stores_nothing(
    client: FlaskClient, headers: dict[str, str], body: object, status: int, error: str
) -> None:
    answer = client.post("/api/repos/churn/runs", json=body, headers=headers)
    assert answer.status_code == status and answer.json == {"error": error, "message": answer.json["message"]}
    assert deliveries(db_of(client)) == []


def test_manual_run_needs_a_known_repository_and_valid_json(client: FlaskClient) -> None:
    unknown = client.post("/api/repos/nope/runs", json={}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.json["error"] == "unknown_repository"
    garbled = client.post(
        "/api/repos/churn/runs", data=b"{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert garbled.status_code == 400 and garbled.json["error"] == "bad_body"
    assert deliveries(db_of(client)) == []


def test_manual_run_needs_the_approver_role(client: FlaskClient) -> None:
    db = db_of(client)
    viewer, approver = users.add(db, "vic", "viewer"), users.add(db, "ann", "approver")
    refused = client.post("/api/repos/churn/runs", json={}, headers={"Authorization": f"Bearer {viewer}"})
    assert (
        refused.status_code == 403
        and refused.json["message"] == "vic is a viewer: run needs the approver role"
    )
    assert deliveries(db) == []
    ok = client.post("/api/repos/churn/runs", json={}, headers={"Authorization": f"Bearer {approver}"})
    assert ok.status_code == 202
    assert deliveries(db)[0].event["reason"] == "manual run by ann"


def test_manual_run_without_a_server_token_is_refused(tmp_path: Path, project: Project) -> None:
    app = create_app({"settings": make_settings(tmp_path, (project.repo_config(),)), "TESTING": True})
    answer = app.test_client().post("/api/repos/churn/runs", json={}, headers=AUTH)
    assert answer.status_code == 403 and answer.json["error"] == "actions_disabled"


def test_manual_run_is_a_delivery_that_becomes_a_superseding_run(
    client: FlaskClient, settings: Settings, project: Project
) -> None:
    project.push()
    db = db_of(client)
    first = client.post("/api/repos/churn/runs", json={}, headers=AUTH)
    assert first.status_code == 202 and first.json["status"] == "accepted"
    earlier = prepare_run(settings, db, [first.json["event_id"]])
    answer = client.post(
        "/api/repos/churn/runs",
        json={"branch": "main", "reason": "new feature store snapshot"},
        headers={**AUTH, "X-Loopline-User": "ada", "Idempotency-Key": "k1"},
    )
    assert answer.status_code == 202
    again = client.post(
        "/api/repos/churn/runs",
        json={"branch": "main", "reason": "new feature store snapshot"},
        headers={**AUTH, "X-Loopline-User": "ada", "Idempotency-Key": "k1"},
    )
    assert again.status_code == 200 and again.json == {**answer.json, "status": "duplicate"}
    other = client.post("/api/repos/churn/runs", json={}, headers={**AUTH, "Idempotency-Key": "k1"})
    assert other.status_code == 409 and other.json["error"] == "delivery_conflict"

    prepared = prepare_run(settings, db, [answer.json["event_id"]])
    run = run_of(db, prepared.run_id)
    assert (run.trigger, run.ref, run.commit) == ("manual", "refs/heads/main", project.head())
    assert run.reason == "manual run by ada: new feature store snapshot"
    assert run.plan == ["unit_tests", "retrain", "evaluate", "register", "integration_tests", "deploy"]
    assert prepared.stages == tuple(run.plan) and run.workspace
    # like a push, the newest manual run of a branch supersedes the older one
    assert run_of(db, earlier.run_id).status == "cancelled"
    assert run_of(db, earlier.run_id).superseded_by == run.id
    event = client.get(answer.json["event"]).json
    assert event["run_ids"] == [run.id] and event["event"]["type"] == "manual"


def test_manual_run_of_a_missing_branch_fails_its_delivery(
    client: FlaskClient, settings: Settings, project: Project
) -> None:
    project.push()
    answer = client.post("/api/repos/churn/runs", json={"branch": "nope"}, headers=AUTH)
    assert answer.status_code == 202
    assert prepare_run(settings, db_of(client), [answer.json["event_id"]]).run_id is None
    event = client.get(answer.json["event"]).json
    assert event["status"] == "failed" and "branch 'nope' does not exist" in event["error"]


def test_cli_run_stores_a_manual_delivery(tmp_path: Path, project: Project) -> None:
    config = tmp_path / "loopline.yaml"
    config.write_text(
        yaml.safe_dump({"repositories": [{"name": "churn", "provider": "git", "url": str(project.remote)}]})
    )
    env = {"LOOPLINE_HOME": str(tmp_path / "home"), "LOOPLINE_CONFIG": str(config), "USER": "grace"}
    cli = CliRunner()
    missing = cli.invoke(main, ["run", "nope"], env=env)
    assert missing.exit_code == 1 and "'nope' is not registered" in missing.output
    bad = cli.invoke(main, ["run", "churn", "--branch", "a..b"], env=env)
    assert bad.exit_code == 1 and "not a valid branch name" in bad.output
    done = cli.invoke(main, ["run", "churn", "--reason", "quarterly refresh"], env=env)
    assert done.exit_code == 0, done.output
    db = Database(f"sqlite:///{tmp_path / 'home' / 'loopline.db'}")
    [row] = deliveries(db)
    assert f"event {row.id} accepted" in done.output
    assert row.provider == "trigger" and row.event["type"] == "manual"
    assert row.event["reason"] == "manual run by grace: quarterly refresh"
    assert row.event["ref"] == "refs/heads/main"
    waited = cli.invoke(main, ["run", "churn", "--wait", "0.3"], env=env)
    assert waited.exit_code == 1 and "no run within 0.3s" in waited.output
    db.dispose()
