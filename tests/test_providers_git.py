"""Each Git host's webhook for a real push: pushed to a bare repository, the host's payload shape
(a recorded body with this push's refs and SHAs) sent signed through the app, then the run
prepared from the stored delivery (``prepare_run``, without Celery) with git's changed files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from pipelines.config import RepoConfig
from pipelines.events import ZERO_SHA
from service import create_app
from service.state import loopline
from store.db import Database
from store.models import Run
from tests.conftest import PAYLOADS, Project, make_settings
from tests.webhooks import headers_for
from workers.intake import prepare_run

SECRET = b"hook-secret"
FULL_NAME = "acme/churn-model"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_bytes())
    return data


def gitlab(ref: str, before: str, after: str) -> dict[str, Any]:
    data = recorded("gitlab/push-hook-docs.json")
    data.update(ref=ref, before=before, after=after, checkout_sha=after)
    data["project"]["path_with_namespace"] = FULL_NAME
    return data


def gitea(ref: str, before: str, after: str) -> dict[str, Any]:
    data = recorded("gitea/push-modified-readme.json")
    data.update(ref=ref, before=before, after=after)
    data["repository"]["full_name"] = FULL_NAME
    return data


def bitbucket_change(ref: str, before: str, after: str) -> dict[str, Any]:
    change = recorded("bitbucket/repo-push-branch-updated.json")["push"]["changes"][0]
    name = ref.removeprefix("refs/heads/")
    change["old"] = None if before == ZERO_SHA else {**change["old"], "name": name}
    change["new"] = {**change["new"], "name": name}
    if change["old"] is not None:
        change["old"]["target"] = {**change["old"]["target"], "hash": before}
    change["new"]["target"] = {**change["new"]["target"], "hash": after}
    change["created"] = before == ZERO_SHA
    return change


def bitbucket(*updates: tuple[str, str, str]) -> dict[str, Any]:
    data = recorded("bitbucket/repo-push-branch-updated.json")
    data["push"]["changes"] = [bitbucket_change(*u) for u in updates]
    data["repository"]["full_name"] = FULL_NAME
    return data


SHAPES: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "gitlab": gitlab,
    "gitea": gitea,
    "forgejo": gitea,
    "bitbucket": lambda ref, before, after: bitbucket((ref, before, after)),
}


@dataclass(frozen=True)
class Host:
    provider: str
    project: Project
    settings: Settings
    client: FlaskClient


def host_for(provider: str, tmp_path: Path, db: Database) -> Host:
    """A bare repository registered for ``provider``, and the app that hears its webhooks."""
    project = Project(tmp_path / "git")
    repo = RepoConfig(name="churn", provider=provider, match=FULL_NAME, url=str(project.remote))
    settings = make_settings(tmp_path, (repo,), db_url=db.url, secrets={"churn": SECRET})
    return Host(
        provider, project, settings, create_app({"settings": settings, "TESTING": True}).test_client()
    )


@pytest.fixture(params=sorted(SHAPES))
def host(request: pytest.FixtureRequest, tmp_path: Path, db: Database) -> Iterator[Host]:
    made = host_for(request.param, tmp_path, db)
    yield made
    with made.client.application.app_context():
        loopline().db.dispose()


def send(client: FlaskClient, provider: str, data: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(data).encode()
    event = "Push Hook" if provider == "gitlab" else None
    answer = client.post(
        f"/hooks/{provider}", data=body, headers=headers_for(provider, body, SECRET, event=event)
    )
    assert answer.status_code == 202, answer.json
    result: dict[str, Any] = answer.json
    return result


def prepared_run(settings: Settings, db: Database, event_id: str) -> Run:
    prepared = prepare_run(settings, db, [event_id])
    assert prepared.run_id is not None
    with db.session() as s:
        run = s.get(Run, prepared.run_id)
        assert run is not None
        _ = run.stages
        return run


def test_push_prepares_a_run_with_gits_changed_files(host: Host, db: Database) -> None:
    provider, project, settings, client = host.provider, host.project, host.settings, host.client
    before = project.head()
    project.push()
    after = project.commit(
        {"app/extra.py": "X = 1\n", "src/train/tweak.py": "Y = 2\n", "docs/notes.md": "hi\n"}
    )
    project.push()
    answer = send(client, provider, SHAPES[provider]("refs/heads/main", before, after))
    run = prepared_run(settings, db, answer["event_id"])
    assert (run.ref, run.before, run.commit) == ("refs/heads/main", before, after)
    files = {f["path"]: f["kind"] for f in run.classification["files"]}
    assert files == {
        "app/extra.py": "app_code",
        "src/train/tweak.py": "training_code",
        "docs/notes.md": "ignore",
    }
    assert run.status == "queued" and run.plan[:3] == ["environment", "unit_tests", "retrain"]


def test_bitbucket_push_of_two_branches_prepares_two_runs(tmp_path: Path, db: Database) -> None:
    bb = host_for("bitbucket", tmp_path, db)
    project = bb.project
    base = project.head()
    project.push()
    main = project.commit({"app/main_only.py": "1\n"})
    project.push("main")
    feature = project.commit({"src/train/feature_only.py": "2\n"})
    project.push("feature")
    answer = send(
        bb.client,
        "bitbucket",
        bitbucket(("refs/heads/main", base, main), ("refs/heads/feature", ZERO_SHA, feature)),
    )
    runs = [prepared_run(bb.settings, db, event_id) for event_id in answer["event_ids"]]
    assert [(r.ref, r.commit) for r in runs] == [("refs/heads/main", main), ("refs/heads/feature", feature)]
    assert [f["path"] for f in runs[0].classification["files"]] == ["app/main_only.py"]
    # A new branch is diffed against the default branch: only what it adds.
    assert [f["path"] for f in runs[1].classification["files"]] == ["src/train/feature_only.py"]
    with bb.client.application.app_context():
        loopline().db.dispose()
