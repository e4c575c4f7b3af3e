"""A deleted branch or tag: answered ``200 ignored``, never stored as work, and the ref's active
runs are cancelled (``store.runs.cancel_branch``); the runner then refuses their stages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipelines.config import RepoConfig
from pipelines.events import ZERO_SHA
from service import create_app
from service.state import loopline
from store.db import Database
from store.models import Delivery, Run, Stage
from store.runs import cancel_branch
from tests.conftest import PAYLOADS, make_settings
from tests.webhooks import headers_for
from workers import runner
from workers.projects import log_path

FEATURE = "refs/heads/feature"


def add_run(
    db: Database, *, repository: str = "churn", ref: str = FEATURE, stages: dict[str, str], status: str
) -> int:
    with db.session() as s:
        run = Run(
            repository=repository,
            ref=ref,
            commit="c" * 40,
            trigger="push",
            kinds=["app_code"],
            plan=list(stages),
            status=status,
            dedupe_key=uuid.uuid4().hex,
        )
        s.add(run)
        s.flush()
        for i, (name, stage_status) in enumerate(stages.items()):
            s.add(Stage(run_id=run.id, name=name, position=i, status=stage_status))
        return run.id


def state(db: Database, run_id: int) -> tuple[str, str | None, list[str]]:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run.status, run.reason, [st.status for st in run.stages]


QUEUED = {"unit_tests": "queued", "integration_tests": "queued"}


def test_cancel_branch_cancels_the_active_runs_of_that_ref(db: Database) -> None:
    waiting = add_run(db, stages=QUEUED, status="queued")
    running = add_run(db, stages={"unit_tests": "running", "integration_tests": "queued"}, status="running")
    # Approved and queued again to resume: a stage already ran, so it is under way.
    resumed = add_run(
        db, stages={"unit_tests": "succeeded", "approval": "succeeded", "deploy": "queued"}, status="queued"
    )
    other_ref = add_run(db, ref="refs/heads/main", stages=QUEUED, status="queued")
    other_repo = add_run(db, repository="fraud", stages=QUEUED, status="queued")
    done = add_run(db, stages={"unit_tests": "succeeded"}, status="succeeded")

    reason = "refs/heads/feature was deleted"
    assert cancel_branch(db, "churn", FEATURE, reason=reason) == [waiting, running, resumed]
    assert state(db, waiting) == ("cancelled", reason, ["cancelled", "cancelled"])
    with db.session() as s:
        run = s.get(Run, waiting)
        assert run is not None and run.finished_at is not None
    # The running stage is stopped by its worker, which watches the run's status.
    assert state(db, running) == ("cancelled", reason, ["running", "cancelled"])
    assert runner.cancelled(db, running) == reason
    assert state(db, resumed) == ("cancelled", reason, ["succeeded", "succeeded", "cancelled"])
    for untouched in (other_ref, other_repo):
        assert state(db, untouched) == ("queued", None, ["queued", "queued"])
    assert state(db, done)[0] == "succeeded"
    assert cancel_branch(db, "churn", FEATURE, reason="again") == []  # idempotent


def test_runner_never_starts_a_stage_of_a_cancelled_run(db: Database, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, (RepoConfig(name="churn", provider="git", match="churn", url="/x"),), db_url=db.url
    )
    run_id = add_run(db, stages=QUEUED, status="queued")
    cancel_branch(db, "churn", FEATURE, reason="deleted")
    # The chain was already on the broker: its messages arrive after the cancellation.
    assert [runner.execute(settings, db, run_id, name) for name in QUEUED] == ["cancelled", "cancelled"]
    assert state(db, run_id)[::2] == ("cancelled", ["cancelled", "cancelled"])
    with db.session() as s:
        assert all(st.started_at is None for st in s.scalars(select(Stage).where(Stage.run_id == run_id)))
    assert not log_path(settings, run_id, "unit_tests").exists()


# --- over HTTP ---------------------------------------------------------------------------------

REPOS = (
    RepoConfig(name="churn", provider="git", match="churn", url="/srv/churn.git"),
    RepoConfig(name="hello", provider="gitea", match="gogits/hello-world", url="/srv/hello.git"),
    RepoConfig(name="foo", provider="bitbucket", match="brydzewski/foo", url="/srv/foo.git"),
)
SECRET = b"topsecret"


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    settings = make_settings(tmp_path, REPOS, db_url=db_url, secrets={r.name: SECRET for r in REPOS})
    app = create_app({"settings": settings, "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def db_of(client: FlaskClient) -> Database:
    with client.application.app_context():
        return loopline().db


def deliveries(client: FlaskClient) -> int:
    with db_of(client).session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery)) or 0)


def post(client: FlaskClient, provider: str, body: bytes, event: str | None = None):
    return client.post(
        f"/hooks/{provider}", data=body, headers=headers_for(provider, body, SECRET, event=event)
    )


def test_git_branch_deletion_cancels_the_branch_runs(client: FlaskClient) -> None:
    db = db_of(client)
    queued = add_run(db, stages=QUEUED, status="queued")
    running = add_run(db, stages={"unit_tests": "running", "integration_tests": "queued"}, status="running")
    body = json.dumps({"repository": "churn", "ref": FEATURE, "before": "a" * 40, "after": ZERO_SHA}).encode()
    answer = post(client, "git", body)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "ignored" and FEATURE in answer.json["reason"]
    assert answer.json["cancelled_run_ids"] == [queued, running]
    assert state(db, queued)[0] == "cancelled" and state(db, running)[0] == "cancelled"
    assert deliveries(client) == 0


def test_gitea_delete_event_cancels_the_branch_runs(client: FlaskClient) -> None:
    db = db_of(client)
    queued = add_run(db, repository="hello", stages=QUEUED, status="queued")
    answer = post(client, "gitea", (PAYLOADS / "gitea/delete-branch.json").read_bytes(), event="delete")
    assert answer.status_code == 200 and answer.json["cancelled_run_ids"] == [queued]
    assert deliveries(client) == 0


def bitbucket_push(*changes: str) -> bytes:
    """A ``repo:push`` with several changes, taken from the recorded single-change bodies."""
    picked = [json.loads((PAYLOADS / f"bitbucket/repo-push-branch-{c}.json").read_bytes()) for c in changes]
    body = picked[0]
    body["push"]["changes"] = [p["push"]["changes"][0] for p in picked]
    return json.dumps(body).encode()


def test_bitbucket_push_of_several_refs_stores_each_and_cancels_the_deleted(client: FlaskClient) -> None:
    db = db_of(client)
    queued = add_run(db, repository="foo", ref="refs/heads/develop", stages=QUEUED, status="queued")
    body = bitbucket_push("updated", "deleted")
    headers = headers_for("bitbucket", body, SECRET, delivery="req-1")
    answer = client.post("/hooks/bitbucket", data=body, headers=headers)
    assert answer.status_code == 202, answer.json
    assert answer.json["cancelled_run_ids"] == [queued] and len(answer.json["event_ids"]) == 1
    event = client.get(f"/api/events/{answer.json['event_id']}").json
    assert event["delivery_id"] == "req-1#0" and event["event"]["ref"] == "refs/heads/master"
    assert deliveries(client) == 1


def test_bitbucket_push_of_several_refs_is_deduplicated_whole(client: FlaskClient) -> None:
    body = bitbucket_push("updated", "created")
    headers = headers_for("bitbucket", body, SECRET)
    first = client.post("/hooks/bitbucket", data=body, headers=headers)
    assert first.status_code == 202 and first.json["status"] == "accepted"
    refs = [client.get(f"/api/events/{i}").json["event"]["ref"] for i in first.json["event_ids"]]
    assert refs == ["refs/heads/master", "refs/heads/develop"]
    again = client.post("/hooks/bitbucket", data=body, headers=headers)
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert again.json["event_ids"] == first.json["event_ids"]
    assert deliveries(client) == 2


def test_a_conflicting_redelivery_cancels_nothing(client: FlaskClient) -> None:
    db = db_of(client)
    first = bitbucket_push("updated", "created")
    assert (
        client.post(
            "/hooks/bitbucket", data=first, headers=headers_for("bitbucket", first, SECRET, delivery="r")
        ).status_code
        == 202
    )
    queued = add_run(db, repository="foo", ref="refs/heads/develop", stages=QUEUED, status="queued")
    other = bitbucket_push("updated", "deleted")  # same delivery id, another body
    answer = client.post(
        "/hooks/bitbucket", data=other, headers=headers_for("bitbucket", other, SECRET, delivery="r")
    )
    assert answer.status_code == 409 and answer.json["error"] == "delivery_conflict"
    assert state(db, queued)[0] == "queued" and deliveries(client) == 2
