"""Approval decisions on both databases: what an approval names, rejection, expiry and the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from loopline.cli import main
from service import create_app
from service.state import loopline
from store import runs
from store.db import Database
from store.models import Run, Stage, utcnow
from tests.conftest import make_settings

TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}
COMMIT = "c0ffee" + "0" * 34


def waiting(db: Database, *, expires_in: timedelta | None = timedelta(hours=1)) -> int:
    """A run whose approval stage named COMMIT and churn v3, as ``approval()`` records it."""
    now = utcnow()
    stages = [("integration_tests", "succeeded"), ("approval", "awaiting_approval"), ("deploy", "queued")]
    with db.session() as s:
        run = Run(
            repository="churn",
            ref="refs/heads/main",
            commit=COMMIT,
            trigger="push",
            kinds=["app_code"],
            plan=[n for n, _ in stages],
            status="awaiting_approval",
            dedupe_key=f"k{now.timestamp()}",
            model_version=None,
        )
        s.add(run)
        s.flush()
        for i, (name, status) in enumerate(stages):
            detail = None
            if name == "approval":
                detail = {
                    "commit": COMMIT,
                    "model": "churn",
                    "model_version": 3,
                    "sha256": "ab" * 32,
                    "requested_at": now.isoformat(),
                    "expires_at": (now + expires_in).isoformat() if expires_in else None,
                }
            s.add(Stage(run_id=run.id, name=name, position=i, status=status, detail=detail))
        return run.id


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


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model_version": 2}, 409, "approval_mismatch"),
        ({"commit": "deadbee"}, 409, "approval_mismatch"),
        ({"commit": "c0ffe"}, 400, "bad_body"),  # too short to name a commit
        ({"commit": COMMIT.upper()[:12], "model_version": 3}, 200, None),
        ({"model_version": True}, 400, "bad_body"),
        ({"comment": 5}, 400, "bad_body"),
        ({"approved": True}, 400, "bad_body"),
        (["ship"], 400, "bad_body"),
        ({}, 200, None),
    ],
)
def test_approve_checks_what_it_names(
    client: FlaskClient, body: object, status: int, error: str | None
) -> None:
    run_id = waiting(db_of(client))
    answer = client.post(f"/api/runs/{run_id}/approve", json=body, headers=TOKEN)
    assert answer.status_code == status and answer.json.get("error") == error, answer.json
    run = client.get(f"/api/runs/{run_id}").json
    assert run["status"] == ("queued" if status == 200 else "awaiting_approval")  # nothing changed on error


def test_approval_record_names_commit_and_version(client: FlaskClient) -> None:
    run_id = waiting(db_of(client))
    answer = client.post(
        f"/api/runs/{run_id}/approve", json={"comment": "ship it", "model_version": 3}, headers=TOKEN
    ).json
    approval = answer["approval"]
    assert approval["status"] == "succeeded" and approval["decision"] == "approved"
    assert (approval["by"], approval["comment"]) == ("ada", "ship it")
    assert (approval["commit"], approval["model"], approval["model_version"]) == (COMMIT, "churn", 3)
    assert approval["sha256"] == "ab" * 32 and approval["at"] >= approval["requested_at"]
    again = client.post(f"/api/runs/{run_id}/reject", headers=TOKEN)
    assert again.status_code == 409 and again.json["error"] == "invalid_state"


def test_reject_records_who_and_why(client: FlaskClient) -> None:
    run_id = waiting(db_of(client))
    answer = client.post(
        f"/api/runs/{run_id}/reject", json={"comment": "not on a Friday"}, headers=TOKEN
    ).json
    assert answer["status"] == "failed" and answer["reason"] == "rejected by ada: not on a Friday"
    assert [s["status"] for s in answer["stages"]] == ["succeeded", "failed", "skipped"]
    assert answer["approval"]["decision"] == "rejected" and answer["approval"]["model_version"] == 3
    assert client.post(f"/api/runs/{run_id}/approve", headers=TOKEN).status_code == 409


def test_expired_approvals_are_swept_and_cannot_be_approved(client: FlaskClient) -> None:
    db = db_of(client)
    soon, never, later = waiting(db), waiting(db, expires_in=None), waiting(db, expires_in=timedelta(days=2))
    assert runs.expire_approvals(db) == []  # nothing is due yet
    assert runs.expire_approvals(db, now=utcnow() + timedelta(hours=2)) == [soon]
    assert runs.expire_approvals(db, now=utcnow() + timedelta(hours=2)) == []  # once
    run = client.get(f"/api/runs/{soon}").json
    assert run["status"] == "cancelled" and run["reason"].startswith("approval expired")
    assert [s["status"] for s in run["stages"]] == ["succeeded", "cancelled", "skipped"]
    assert run["approval"]["decision"] == "expired" and run["finished_at"]
    answer = client.post(f"/api/runs/{soon}/approve", headers=TOKEN)
    assert answer.status_code == 409 and "cancelled" in answer.json["message"]
    assert {client.get(f"/api/runs/{r}").json["status"] for r in (never, later)} == {"awaiting_approval"}
    # The worktree of the expired run is removed by the same reconcile pass.
    with db.session() as s:
        s.get(Run, soon).workspace = "/nonexistent/ws"
    assert [r for r, _, _ in runs.finished_workspaces(db)] == [soon]


def test_approving_past_the_deadline_before_the_sweep_is_refused(client: FlaskClient) -> None:
    db = db_of(client)
    run_id = waiting(db, expires_in=timedelta(seconds=-1))
    answer = client.post(f"/api/runs/{run_id}/approve", headers=TOKEN)
    assert answer.status_code == 409 and "expired" in answer.json["message"]
    assert runs.expire_approvals(db) == [run_id]


def test_one_decision_only(db: Database) -> None:
    run_id = waiting(db)
    runs.approve(db, run_id, by="ada", comment=None)
    with pytest.raises(runs.InvalidAction):
        runs.reject(db, run_id, by="grace", comment=None)
    assert runs.expire_approvals(db, now=utcnow() + timedelta(days=1)) == []
    with db.session() as s:
        approval = next(st for st in s.get(Run, run_id).stages if st.name == "approval")
        assert approval.detail["by"] == "ada" and approval.status == "succeeded"


def test_cli_approve_names_the_version_and_prints_the_record(tmp_path: Path) -> None:
    env = {"LOOPLINE_HOME": str(tmp_path / "home"), "LOOPLINE_CONFIG": "", "USER": "grace"}
    db = Database(f"sqlite:///{tmp_path / 'home' / 'loopline.db'}")
    db.migrate()
    run_id = waiting(db)
    cli = CliRunner()
    wrong = cli.invoke(main, ["approve", str(run_id), "--model-version", "4"], env=env)
    assert wrong.exit_code == 1 and "would ship model version 3, not 4" in wrong.output
    done = cli.invoke(
        main,
        ["approve", str(run_id), "--model-version", "3", "--commit", COMMIT[:8], "--comment", "go"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert "approved by grace at " in done.output and ': "go"' in done.output
    assert f"names commit {COMMIT}, churn v3 (sha256 abababab" in done.output
    other = waiting(db)
    rejected = cli.invoke(main, ["approve", str(other), "--reject", "--comment", "no"], env=env)
    assert rejected.exit_code == 0 and "rejected by grace" in rejected.output
    db.dispose()
