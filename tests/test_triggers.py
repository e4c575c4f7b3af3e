"""Triggers end in runs like any delivery: manual runs (API and CLI), schedules on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from config.settings import Settings
from loopline.cli import main
from pipelines.config import ConfigError
from pipelines.project import PerformanceTrigger, ScheduleTrigger, parse_project_config
from pipelines.triggers import last_tick, schedule_decision
from service import create_app
from service.state import loopline
from store import outcomes, triggers, users
from store.db import Database
from store.models import Delivery, Deployment, Run
from store.outcomes import Predicted
from tests.conftest import Project, make_settings
from workers.intake import prepare_run
from workers.projects import mirror
from workers.triggers import check, check_performance, check_schedule

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
    assert run.plan == [
        "environment",
        "unit_tests",
        "retrain",
        "evaluate",
        "register",
        "integration_tests",
        "deploy",
    ]
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


HOURLY = ScheduleTrigger("0 * * * *", "UTC")
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def test_schedule_ticks_in_its_time_zone() -> None:
    berlin = ScheduleTrigger("0 3 * * 1", "Europe/Berlin")  # Monday 03:00 in Berlin: 02:00 UTC in winter
    assert last_tick(berlin, datetime(2026, 1, 6, 12, 0, tzinfo=UTC)) == datetime(
        2026, 1, 5, 2, 0, tzinfo=UTC
    )
    assert last_tick(berlin, datetime(2026, 7, 7, 12, 0, tzinfo=UTC)) == datetime(
        2026, 7, 6, 1, 0, tzinfo=UTC
    )
    on_tick = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert last_tick(HOURLY, on_tick) == on_tick
    assert last_tick(HOURLY, on_tick - timedelta(microseconds=1)) == on_tick - timedelta(hours=1)


def test_schedule_decisions() -> None:
    assert schedule_decision(HOURLY, T0, None, active=None).action == "arm"
    assert schedule_decision(HOURLY, T0, T0, active=None).action == "wait"
    due = schedule_decision(HOURLY, T0 + timedelta(hours=1), T0, active=None)
    assert (due.action, due.tick) == ("fire", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    late = schedule_decision(HOURLY, T0 + timedelta(hours=5), T0, active=None)
    assert late.action == "fire" and "catch-up for 5 missed ticks" in late.reason
    busy = schedule_decision(HOURLY, T0 + timedelta(hours=1), T0, active="run 4")
    assert busy.action == "skip" and "scheduled run 4 is active" in busy.reason


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"schedule": {"cron": "61 * * * *"}}, "triggers.schedule.cron"),
        ({"schedule": {"cron": "* * * * * *"}}, "triggers.schedule.cron"),
        ({"schedule": {"cron": "0 3 * * 1", "timezone": "Mars/Olympus"}}, "triggers.schedule.timezone"),
        ({"schedule": {"cron": "0 3 * * 1", "timezone": "../etc"}}, "triggers.schedule.timezone"),
        ({"schedule": {"cron": "0 3 * * 1", "timezone": 5}}, "triggers.schedule.timezone"),
        ({"schedule": {"cron": "0 3 * * 1", "every": "day"}}, "triggers.schedule.every"),
        ({"schedule": ["0 3 * * 1"]}, "triggers.schedule"),
        ({"drift": {"threshold": -1}}, "triggers.drift.threshold"),
        ({"drift": {"sample_rate": 2}}, "triggers.drift.sample_rate"),
        ({"drift": {"cooldown": "soon"}}, "triggers.drift.cooldown"),
        ({"volume": {}}, "triggers.volume.min_new_rows"),
        ({"performance": {"min": 0.9, "metric": "f1"}}, "triggers.performance.metric"),
        ({"nightly": True}, "triggers.nightly"),
    ],
)
def test_bad_triggers_name_the_key(raw: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_project_config({"triggers": raw})
    assert caught.value.key == key


def test_the_spec_example_parses() -> None:
    triggers = parse_project_config(
        {
            "triggers": {
                "schedule": {"cron": "0 3 * * 1", "timezone": "Europe/Berlin"},
                "drift": {"threshold": 0.2, "min_samples": 500, "sample_rate": 0.1, "cooldown": "6h"},
                "volume": {"min_new_rows": 10000},
                "performance": {"metric": "accuracy", "min": 0.85, "window": 1000},
            }
        }
    ).triggers
    assert triggers.schedule == ScheduleTrigger("0 3 * * 1", "Europe/Berlin")
    assert triggers.drift is not None and triggers.drift.cooldown == 6 * 3600
    assert triggers.volume is not None and triggers.volume.min_new_rows == 10000
    assert triggers.performance is not None and triggers.performance.min == 0.85


def _finish(db: Database, run_id: int | None) -> None:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status = "succeeded"


def test_schedule_fires_one_run_per_tick_and_none_while_one_is_active(
    settings: Settings, project: Project, db_url: str
) -> None:
    project.push()
    db = Database(db_url)
    db.migrate()
    repo = settings.repositories[0]
    assert check_schedule(db, repo, HOURLY, T0) is None  # first sight: armed, nothing fires
    assert check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=20)) is None
    event = check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=31))
    assert event is not None
    assert check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=45)) is None
    run = run_of(db, prepare_run(settings, db, [event]).run_id)
    assert (run.trigger, run.ref, run.commit) == ("schedule", "refs/heads/main", project.head())
    assert run.reason == "schedule '0 * * * *': tick 2026-03-02 10:00 UTC"
    assert run.plan[:3] == ["environment", "unit_tests", "retrain"]
    # the next tick finds run still queued: skipped (and remembered as handled), no second run
    assert check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=91)) is None
    assert f"skipped: the previous scheduled run {run.id} is active" in (
        triggers.state(db, "churn", "schedule").reason or ""
    )
    _finish(db, run.id)
    assert check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=92)) is None
    assert check_schedule(db, repo, HOURLY, T0 + timedelta(minutes=151)) is not None
    db.dispose()


def test_restart_after_missed_ticks_fires_exactly_one_catch_up(
    settings: Settings, project: Project, db_url: str
) -> None:
    project.push()
    db = Database(db_url)
    db.migrate()
    repo = settings.repositories[0]
    check_schedule(db, repo, HOURLY, T0)
    first = check_schedule(db, repo, HOURLY, T0 + timedelta(hours=1))
    _finish(db, prepare_run(settings, db, [first or ""]).run_id)
    db.dispose()
    # Loopline is down for five hours; a new process with a new connection picks up the store
    again = Database(db_url)
    later = T0 + timedelta(hours=6, minutes=5)
    catch_up = check_schedule(again, repo, HOURLY, later)
    assert catch_up is not None and catch_up != first
    assert check_schedule(again, repo, HOURLY, later) is None
    assert check_schedule(again, repo, HOURLY, later + timedelta(minutes=10)) is None
    with again.session() as s:
        fired = [d for d in s.query(Delivery) if d.provider == "trigger"]
    assert len(fired) == 2 and "catch-up for 5 missed ticks" in (fired[-1].event["reason"] or "")
    # a crash between storing the delivery and the state: the same tick again is a duplicate
    assert (
        triggers.request_run(
            again,
            repository="churn",
            trigger="schedule",
            ref="refs/heads/main",
            reason=fired[-1].event["reason"],
            key=datetime(2026, 3, 2, 15, 0, tzinfo=UTC).isoformat(),
        ).status
        == "duplicate"
    )
    again.dispose()


def test_check_reads_the_schedule_from_the_default_branch(
    settings: Settings, project: Project, db_url: str
) -> None:
    config = yaml.safe_load((project.work / "loopline.yml").read_text())
    config["triggers"] = {"schedule": {"cron": "* * * * *", "timezone": "Europe/Berlin"}}
    project.commit({"loopline.yml": yaml.safe_dump(config)})
    project.push()
    db = Database(db_url)
    db.migrate()
    assert check(settings, db, T0) == []  # no mirror fetched yet: nothing to read
    mirror(settings, settings.repositories[0]).update()
    assert check(settings, db, T0) == []  # armed
    [notice] = check(settings, db, T0 + timedelta(seconds=61))
    assert notice.event == "trigger.fired" and notice.detail["trigger"] == "schedule"
    run = run_of(db, prepare_run(settings, db, [notice.detail["event_id"]]).run_id)
    assert (
        run.trigger == "schedule"
        and run.reason == "schedule '* * * * *': tick 2026-03-02 10:31 Europe/Berlin"
    )
    db.dispose()


def test_performance_below_the_minimum_retrains_once_per_cooldown(
    settings: Settings, project: Project, db_url: str
) -> None:
    project.push()
    db = Database(db_url)
    db.migrate()
    repo = settings.repositories[0]
    with db.session() as s:
        run = Run(repository="churn", trigger="push", status="succeeded", dedupe_key="first")
        s.add(run)
        s.flush()
        serving = Deployment(model_name="churn", version=3, run_id=run.id, target="local", status="active")
        s.add(serving)
        s.flush()
        release = serving.id
    ids = [f"{i:032x}" for i in range(60)]
    outcomes.add(db, [Predicted(rid, "churn", release, ("1",)) for rid in ids], [])
    performance = PerformanceTrigger(min=0.8, window=50)
    # 40 labelled, all right: the window is not full yet
    assert outcomes.feedback(db, "churn", {rid: ("1",) for rid in ids[:40]}).recorded == 40
    assert check_performance(db, repo, "churn", performance, T0) is None
    # 20 more, all wrong: the newest 50 hold 30 right ones, 0.6 < 0.8
    outcomes.feedback(db, "churn", {rid: ("0",) for rid in ids[40:]})
    event = check_performance(db, repo, "churn", performance, T0)
    assert event is not None
    run = run_of(db, prepare_run(settings, db, [event]).run_id)
    assert run.trigger == "performance"
    assert run.reason == "online accuracy of v3 fell to 0.600 < 0.8 over the last 50 labelled predictions"
    assert check_performance(db, repo, "churn", performance, T0 + timedelta(minutes=1)) is None  # under way
    _finish(db, run.id)
    assert check_performance(db, repo, "churn", performance, T0 + timedelta(hours=1)) is None  # cooling down
    assert check_performance(db, repo, "churn", performance, T0 + timedelta(hours=7)) is not None
    db.dispose()
