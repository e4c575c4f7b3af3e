"""Named users and roles on both databases: tokens kept as digests, roles enforced per action."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from loopline.cli import main
from service import create_app
from service.state import loopline
from store import users
from store.models import Run, User
from tests.conftest import make_settings
from tests.test_approval import waiting


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    app = create_app({"settings": make_settings(tmp_path, db_url=db_url, api_token="boot"), "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_roles_decide_who_may_act_and_actions_record_the_person(client: FlaskClient) -> None:
    with client.application.app_context():
        db = loopline().db
    viewer, approver, admin = (
        users.add(db, n, r) for n, r in [("vic", "viewer"), ("ann", "approver"), ("root", "admin")]
    )
    with db.session() as s:  # only the digest is kept
        stored = {u.name: u.token_sha256 for u in s.scalars(select(User))}
    assert stored["ann"] == users.digest(approver) and approver not in stored.values()

    me = client.get("/api/me", headers=bearer(approver)).get_json()
    assert me == {
        "name": "ann",
        "role": "approver",
        "may": ["approve", "cancel", "reject", "reproduce", "retry", "run"],
    }
    assert client.get("/api/me", headers=bearer("llu_nope")).status_code == 401
    assert client.get("/api/me", headers=bearer("boot")).get_json()["role"] == "admin"

    run_id = waiting(db)
    refused = client.post(f"/api/runs/{run_id}/approve", headers=bearer(viewer))
    assert refused.status_code == 403
    assert refused.get_json() == {
        "error": "forbidden",
        "message": "vic is a viewer: approve needs the approver role",
    }
    ok = client.post(f"/api/runs/{run_id}/approve", headers=bearer(approver), json={"comment": "fine"})
    assert ok.status_code == 200 and ok.get_json()["approval"]["by"] == "ann"

    denied = client.post("/api/models/churn/rollback", headers=bearer(approver))
    assert denied.status_code == 403 and denied.get_json()["error"] == "forbidden"
    # an admin passes the role check (and then meets the model's state: nothing deployed)
    assert client.post("/api/models/churn/rollback", headers=bearer(admin)).status_code == 404

    users.remove(db, "ann")
    gone = client.post(f"/api/runs/{waiting(db)}/reject", headers=bearer(approver))
    assert gone.status_code == 401 and gone.get_json()["error"] == "bad_token"
    with db.session() as s:
        assert s.get(Run, run_id).status == "queued"


def test_no_token_and_no_users_means_actions_are_off(tmp_path: Path) -> None:
    app = create_app({"settings": make_settings(tmp_path), "TESTING": True})
    answer = app.test_client().post("/api/runs/1/cancel")
    assert answer.status_code == 403 and answer.get_json()["error"] == "actions_disabled"
    with app.app_context():
        users.add(loopline().db, "ann", "approver")
        loopline().db.dispose()
    assert app.test_client().post("/api/runs/1/cancel").get_json()["error"] == "bad_token"


def test_cli_users_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LOOPLINE_DATABASE_URL", raising=False)
    runner = CliRunner()
    added = runner.invoke(main, ["users", "add", "grace", "--role", "admin"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith(users.TOKEN_PREFIX) and len(token) > 40
    again = runner.invoke(main, ["users", "add", "grace"])
    assert again.exit_code == 1 and "a user named 'grace' exists already" in again.output
    bad = runner.invoke(main, ["users", "add", "x y"])
    assert bad.exit_code == 1 and "bad user name" in bad.output
    listed = runner.invoke(main, ["users", "list", "--json"])
    assert [(u["name"], u["role"]) for u in json.loads(listed.stdout)] == [("grace", "admin")]
    assert runner.invoke(main, ["users", "remove", "grace"]).exit_code == 0
    assert "no users yet" in runner.invoke(main, ["users", "list"]).stdout
    missing = runner.invoke(main, ["users", "remove", "grace"])
    assert missing.exit_code == 1 and "no user named 'grace'" in missing.output
