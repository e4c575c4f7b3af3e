"""Release tags, end to end without Celery: intake plus the real step functions on the sample project.

A push to main trains and registers a model; a tag on that commit re-deploys exactly that model
version without retraining; a tag on a commit no run registered a model for fails and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.settings import Settings
from pipelines.events import ZERO_SHA, Event
from store.db import Database
from store.deliveries import record_delivery
from store.models import Deployment, ModelVersion, Run
from tests.conftest import Project, git, make_settings
from workers import runner, serving
from workers.intake import prepare_run


@pytest.fixture
def settings(tmp_path: Path, project: Project, db: Database) -> Iterator[Settings]:
    yield make_settings(tmp_path, (project.repo_config(),), db_url=db.url)
    with db.session() as s:  # stop every release the test started
        pids = [d.pid for d in s.scalars(select(Deployment)) if d.pid]
    for pid in pids:
        serving.stop(pid)


def deliver(db: Database, event: Event) -> str:
    return record_delivery(
        db,
        provider="git",
        delivery_id=f"{event.ref}:{event.after}",
        body=b"x",
        repository="churn",
        event=event,
    ).event_id


def run_through(settings: Settings, db: Database, event: Event) -> Run:
    """Intake, then every planned stage in order, as the Celery chain would."""
    prepared = prepare_run(settings, db, [deliver(db, event)])
    for stage in prepared.stages:
        if runner.execute(settings, db, prepared.run_id, stage) != "succeeded":
            break
    with db.session() as s:
        run = s.get(Run, prepared.run_id)
        assert run is not None
        _ = run.stages
        return run


def tag(project: Project, name: str, commit: str) -> str:
    git("tag", "-a", "-m", f"release {name}", name, commit, cwd=project.work)
    git("push", "-q", "origin", f"refs/tags/{name}", cwd=project.work)
    return git("rev-parse", f"refs/tags/{name}", cwd=project.work)  # the tag object, as payloads send it


def test_tag_redeploys_the_model_registered_for_its_commit(
    settings: Settings, db: Database, project: Project
) -> None:
    first = project.head()
    project.push()
    train_py = project.work / "src/train/train.py"
    trained = project.commit(
        {
            "loopline.yml": (project.work / "loopline.yml").read_text() + "release: {tags: ['v*']}\n",
            "src/train/train.py": train_py.read_text() + "\n# retrain\n",
        }
    )
    project.push()
    push = run_through(settings, db, Event("push", "churn", "refs/heads/main", first, trained))
    assert [(s.name, s.status) for s in push.stages] == [
        (name, "succeeded")
        for name in (
            "environment",
            "unit_tests",
            "retrain",
            "evaluate",
            "register",
            "integration_tests",
            "deploy",
        )
    ]
    assert push.model_version == 1

    release = run_through(
        settings,
        db,
        Event("tag", "churn", "refs/tags/v1.0", ZERO_SHA, tag(project, "v1.0", trained), created=True),
    )
    assert release.trigger == "tag" and release.commit == trained
    assert release.plan == ["environment", "deploy"] and release.status == "succeeded", release.reason
    assert "release tag" in (release.reason or "")
    assert release.stages[1].detail is not None and release.stages[1].detail["version"] == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1  # nothing retrained
        active = s.scalars(select(Deployment).where(Deployment.status == "active")).one()
        assert (active.version, active.run_id) == (1, release.id)

    # A tag on a commit that no run registered (or deployed) a model for: fails, saying why.
    untrained = project.commit({"app/banner.py": "BANNER = 'hello'\n"})
    project.push()
    orphan = run_through(
        settings,
        db,
        Event("tag", "churn", "refs/tags/v1.1", ZERO_SHA, tag(project, "v1.1", untrained), created=True),
    )
    assert orphan.plan == ["environment", "deploy"] and orphan.status == "failed"
    assert orphan.reason == "stage deploy failed"
    assert f"no version of model 'churn' was registered for commit {untrained[:12]}" in orphan.stages[1].log
    with db.session() as s:
        assert s.scalars(select(Deployment).where(Deployment.status == "active")).one().run_id == release.id

    # Once a deploy-branch run of that commit has shipped a model (app code only: the production
    # model), a tag on it releases that version.
    app_run = run_through(settings, db, Event("push", "churn", "refs/heads/main", trained, untrained))
    assert app_run.plan == ["environment", "unit_tests", "integration_tests", "deploy"]
    assert app_run.status == "succeeded"
    again = run_through(
        settings,
        db,
        Event("tag", "churn", "refs/tags/v1.2", ZERO_SHA, tag(project, "v1.2", untrained), created=True),
    )
    assert again.status == "succeeded" and again.stages[1].detail["version"] == 1
