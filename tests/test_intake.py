"""From a stored delivery to a planned run, on real git repositories, without Celery."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from config.settings import Settings
from pipelines.events import ZERO_SHA, Event
from store.db import Database
from store.deliveries import record_delivery
from store.models import Delivery, Run, utcnow
from tests.conftest import Project, make_settings
from workers import runner
from workers.intake import Prepared, prepare_run
from workers.projects import workspace
from workers.watcher import FolderWatcher


def deliver(db: Database, project: Project, before: str, after: str, ref: str = "refs/heads/main") -> str:
    event = Event(
        type="push", repository="churn", ref=ref, before=before, after=after, created=set(before) == {"0"}
    )
    return record_delivery(
        db, provider="git", delivery_id=f"{ref}:{after}", body=after.encode(), repository="churn", event=event
    ).event_id


@pytest.fixture
def settings(tmp_path: Path, project: Project, db: Database) -> Settings:
    return make_settings(tmp_path, (project.repo_config(),), db_url=db.url)


def run_of(db: Database, run_id: int) -> Run:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        _ = run.stages
        return run


def test_docs_only_push_is_a_skipped_run(settings: Settings, db: Database, project: Project) -> None:
    first = project.head()
    project.push()
    after = project.commit({"docs/overview.md": "more words\n", "README.md": "# hi\n"})
    project.push()
    delivery = deliver(db, project, first, after)
    prepared = prepare_run(settings, db, [delivery])
    run = run_of(db, prepared.run_id)
    assert prepared.stages == () and run.status == "skipped" and run.stages == []
    assert "ignored" in (run.reason or "")
    assert (run.message, run.author) == ("change", "t")  # from git, for the runs list
    assert {f["path"]: f["kind"] for f in run.classification["files"]} == {
        "docs/overview.md": "ignore",
        "README.md": "ignore",
    }
    with db.session() as s:
        row = s.get(Delivery, delivery)
        assert row.status == "processed" and row.run_id == run.id
    # A redelivered intake finds the same run and publishes nothing again.
    assert prepare_run(settings, db, [delivery]) == type(prepared)(run.id)


def test_failing_unit_test_stops_before_retraining(
    settings: Settings, db: Database, project: Project
) -> None:
    first = project.head()
    after = project.commit(
        {
            "src/train/train.py": (project.work / "src/train/train.py").read_text() + "\n",
            "tests/unit/test_broken.py": "def test_broken():\n    assert 1 == 2\n",
        }
    )
    project.push()
    prepared = prepare_run(settings, db, [deliver(db, project, first, after)])
    assert prepared.stages[:3] == ("environment", "unit_tests", "retrain")
    statuses = [runner.execute(settings, db, prepared.run_id, stage) for stage in prepared.stages[:3]]
    assert statuses == ["succeeded", "failed", "skipped"]
    run = run_of(db, prepared.run_id)
    assert run.status == "failed" and run.reason == "stage unit_tests failed"
    assert [(s.name, s.status) for s in run.stages] == [
        ("environment", "succeeded"),
        ("unit_tests", "failed"),
    ] + [(name, "skipped") for name in prepared.stages[2:]]
    assert "test_broken" in run.stages[1].log and run.stages[1].exit_code == 1
    assert run.workspace is None  # the worktree is removed when the run ends
    assert not workspace(settings, run.id).exists()


def test_new_branch_diffs_against_the_default_branch(
    settings: Settings, db: Database, project: Project
) -> None:
    project.push()
    after = project.commit({"app/extra.py": "X = 1\n"})
    project.push("feature")
    prepared = prepare_run(settings, db, [deliver(db, project, ZERO_SHA, after, "refs/heads/feature")])
    run = run_of(db, prepared.run_id)
    assert [f["path"] for f in run.classification["files"]] == ["app/extra.py"]
    assert run.kinds == ["app_code"]
    assert prepared.stages == ("environment", "unit_tests", "integration_tests")  # not a deploy branch


def test_skip_marker_in_commit_message(settings: Settings, db: Database, project: Project) -> None:
    first = project.head()
    after = project.commit({"app/x.py": "1\n"}, message="tweak [skip ci]")
    project.push()
    run = run_of(db, prepare_run(settings, db, [deliver(db, project, first, after)]).run_id)
    assert run.status == "skipped" and "skip" in run.reason


def test_broken_project_config_is_a_failed_config_stage(
    settings: Settings, db: Database, project: Project
) -> None:
    first = project.head()
    after = project.commit({"loopline.yml": "stages:\n  deploy: {target: moon}\n"})
    project.push()
    run = run_of(db, prepare_run(settings, db, [deliver(db, project, first, after)]).run_id)
    assert run.status == "failed" and [(s.name, s.status) for s in run.stages] == [("config", "failed")]
    assert "loopline.yml: stages.deploy.target: must be" in run.stages[0].log


def test_unknown_commit_fails_the_delivery_clearly(
    settings: Settings, db: Database, project: Project
) -> None:
    project.push()
    delivery = deliver(db, project, project.head(), "f" * 40)
    assert prepare_run(settings, db, [delivery]).run_id is None
    with db.session() as s:
        row = s.get(Delivery, delivery)
        assert row.status == "failed" and "not in" in row.error


def test_data_drop_lands_in_the_worktree(tmp_path: Path, project: Project, db: Database) -> None:
    from pipelines.config import DataLakeEntry

    lake = tmp_path / "lake"
    (lake / "sub").mkdir(parents=True)
    repo = project.repo_config(data_lake=(DataLakeEntry(folder=str(lake)),))
    settings = make_settings(tmp_path, (repo,), db_url=db.url)
    project.push()
    (lake / "sub" / "batch.csv").write_text("a,b\n1,2\n")
    (lake / "batch2.csv.part").write_text("still being written")
    (lake / ".hidden.csv").write_text("x")
    (lake / "link.csv").symlink_to(tmp_path / "loopline.yaml")
    watcher = FolderWatcher(settings, db, settle=0)
    assert watcher.scan_once(now=0) == 0  # first sight: not yet known to be complete
    assert watcher.scan_once(now=1) == 1  # unchanged since: recorded once
    assert watcher.scan_once(now=2) == 0
    with db.session() as s:
        ids = [d.id for d in s.query(Delivery).all()]
    prepared = prepare_run(settings, db, ids)
    run = run_of(db, prepared.run_id)
    assert run.trigger == "data" and run.kinds == ["data"]
    assert prepared.stages[0] == "validate_data" and "retrain" in prepared.stages
    assert (Path(run.workspace) / "data/raw/sub/batch.csv").read_text() == "a,b\n1,2\n"
    assert [f["path"] for f in run.classification["files"]] == ["data/raw/sub/batch.csv"]


def _drop(tmp_path: Path, project: Project, db: Database, files: dict[str, str]) -> tuple[Settings, Prepared]:
    from pipelines.config import DataLakeEntry

    lake = tmp_path / "lake"
    lake.mkdir()
    settings = make_settings(
        tmp_path, (project.repo_config(data_lake=(DataLakeEntry(folder=str(lake)),)),), db_url=db.url
    )
    project.push()
    for name, text in files.items():
        (lake / name).write_text(text)
    watcher = FolderWatcher(settings, db, settle=0)
    watcher.scan_once(now=0)
    watcher.scan_once(now=1)
    with db.session() as s:
        ids = [d.id for d in s.query(Delivery).all()]
    return settings, prepare_run(settings, db, ids)


def test_validate_data_passes_good_data(tmp_path: Path, project: Project, db: Database) -> None:
    settings, prepared = _drop(tmp_path, project, db, {"a.csv": "x,y,target\n1,2,0\n3,4,1\n"})
    assert runner.execute(settings, db, prepared.run_id, "validate_data") == "succeeded"
    stage = run_of(db, prepared.run_id).stages[0]
    assert stage.detail["files"] == [
        {"file": "a.csv", "rows": 2, "columns": 3, "problems": [], "drift": {}, "drifted": []}
    ]


def test_validate_data_fails_bad_data_before_retraining(
    tmp_path: Path, project: Project, db: Database
) -> None:
    settings, prepared = _drop(tmp_path, project, db, {"bad.csv": "x,y\n1,2\n3\n", "holes.csv": "x,y\n1,\n"})
    assert runner.execute(settings, db, prepared.run_id, "validate_data") == "failed"
    run = run_of(db, prepared.run_id)
    assert run.status == "failed" and [s.status for s in run.stages][1:] == ["skipped"] * (
        len(run.stages) - 1
    )
    problems = {f["file"]: f["problems"] for f in run.stages[0].detail["files"]}
    assert problems == {"bad.csv": ["1 row(s) do not have 2 values"], "holes.csv": ["1 missing value(s)"]}
    assert "bad.csv: 1 row(s) do not have 2 values" in run.stages[0].log


def test_intake_redelivered_after_a_crash_finishes_the_same_run(
    settings: Settings, db: Database, project: Project
) -> None:
    from store.deliveries import finish

    first = project.head()
    after = project.commit({"app/x.py": "X = 2\n"})
    project.push()
    delivery = deliver(db, project, first, after)
    prepared = prepare_run(settings, db, [delivery])
    assert prepared.stages == ("environment", "unit_tests", "integration_tests", "deploy")
    # The worker died before publishing: the redelivered task gets the same run and stages.
    assert prepare_run(settings, db, [delivery]) == prepared
    finish(db, [delivery], run_id=prepared.run_id)  # published: a third delivery changes nothing
    assert prepare_run(settings, db, [delivery]).stages == ()
    with db.session() as s:
        assert s.query(Run).count() == 1


def test_second_delivery_of_the_same_commit_joins_its_run(
    settings: Settings, db: Database, project: Project
) -> None:
    first = project.head()
    after = project.commit({"app/x.py": "X = 3\n"})
    project.push()
    one = prepare_run(settings, db, [deliver(db, project, first, after)])
    event = Event(type="push", repository="churn", ref="refs/heads/main", before=first, after=after)
    other = record_delivery(
        db, provider="github", delivery_id="gh-1", body=b"x", repository="churn", event=event
    )
    two = prepare_run(settings, db, [other.event_id])
    assert two.run_id == one.run_id and two.stages == ()


def test_a_duplicate_stage_message_does_not_run_it_twice(
    settings: Settings, db: Database, project: Project
) -> None:
    from datetime import timedelta

    first = project.head()
    after = project.commit({"app/x.py": "X = 4\n"})
    project.push()
    prepared = prepare_run(settings, db, [deliver(db, project, first, after)])
    with db.session() as s:  # another worker, on another host, has it under a live lease
        stage = s.get(Run, prepared.run_id).stages[1]
        stage.status, stage.started_at, stage.attempt = "running", utcnow(), 1
        stage.lease_owner, stage.lease_expires_at = "elsewhere:1", utcnow() + timedelta(seconds=30)
    assert runner.execute(settings, db, prepared.run_id, "unit_tests") == runner.ALREADY_RUNNING
    dead = subprocess.Popen(["true"])
    dead.wait()
    with db.session() as s:  # … but a holder on this host that is gone died: its stage is taken over
        s.get(Run, prepared.run_id).stages[1].lease_owner = f"{socket.gethostname()}:{dead.pid}"
    assert runner.execute(settings, db, prepared.run_id, "unit_tests") == runner.STALE
    stage = run_of(db, prepared.run_id).stages[1]
    assert (stage.status, stage.attempt, stage.published_at, stage.lease_owner) == ("queued", 1, None, None)
    assert runner.execute(settings, db, prepared.run_id, "unit_tests") == "succeeded"
    assert run_of(db, prepared.run_id).stages[1].attempt == 2
