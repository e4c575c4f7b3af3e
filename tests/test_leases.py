"""The store drives every run: the lifecycle's moves, stages published from the store once, leases
that a dead worker's stage loses, and the reconciler that sends lost work back (on both stores).
The fault-injection suite (``tests/faults``) does the same with real processes and real faults."""

from __future__ import annotations

import multiprocessing
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from config.settings import Settings
from store import lifecycle, schedule
from store.db import Database
from store.models import Run, Stage, utcnow
from tests.conftest import Project, make_settings
from tests.test_supersede import deliver, gone, run_of
from workers import runner
from workers.intake import prepare_run
from workers.projects import log_path
from workers.reconcile import reconcile


def test_the_lifecycle_allows_only_its_moves() -> None:
    run = Run(status="queued")
    stage = Stage(name="unit_tests", status="queued", run_id=1)
    run.stages = [stage]
    lifecycle.move_stage(stage, "running")
    lifecycle.move_run(run, "running")
    assert run.started_at is not None and stage.started_at is not None
    lifecycle.move_stage(stage, "queued")  # its worker died: a new attempt
    assert stage.started_at is None
    lifecycle.end_run(run, "cancelled", reason="by ada", rest="cancelled")
    assert (run.status, run.reason, stage.status, stage.finished_at) == (
        "cancelled",
        "by ada",
        "cancelled",
        None,
    )
    for to in lifecycle.STATUSES:  # nothing leaves a terminal status
        with pytest.raises(lifecycle.IllegalMove):
            lifecycle.move_run(run, to)
    with pytest.raises(lifecycle.IllegalMove, match="queued → awaiting_approval"):
        lifecycle.move_stage(Stage(name="approval", status="queued", run_id=1), "awaiting_approval")
    assert lifecycle.ACTIVE | lifecycle.TERMINAL == set(lifecycle.STATUSES)
    assert lifecycle.listed(lifecycle.RETRYABLE) == "failed, cancelled, gate_failed"


def planned(db: Database, names: tuple[str, ...] = ("unit_tests", "deploy")) -> int:
    with db.session() as s:
        run = Run(
            repository="churn", ref="refs/heads/main", commit="c" * 40, trigger="push", kinds=["app_code"],
            plan=list(names), status="queued", dedupe_key=f"k{time.monotonic_ns()}", workspace="/nowhere",
            stages=[Stage(name=n, position=i, status="queued") for i, n in enumerate(names)],
        )  # fmt: skip
        s.add(run)
        s.flush()
        return run.id


def retrain_of(db: Database, run_id: int) -> Stage:
    """The run's retrain stage (the environment and unit tests come before it)."""
    return next(st for st in run_of(db, run_id).stages if st.name == "retrain")


def test_stages_are_published_from_the_store_once_and_in_order(db: Database) -> None:
    run_id = planned(db)
    (first,) = schedule.take_due(db)
    assert (first.run_id, first.stage) == (run_id, "unit_tests")
    assert schedule.take_due(db) == []  # published: not due again
    schedule.forget_publication(db, first.task_id)  # the broker lost it
    (again,) = schedule.take_due(db)
    assert again.stage == "unit_tests" and again.task_id != first.task_id
    with db.session() as s:
        stage = s.get(Run, run_id).stages[0]  # type: ignore[union-attr]
        stage.status = "succeeded"
    assert [d.stage for d in schedule.take_due(db)] == ["deploy"]


def test_lost_publications_and_dead_leases_are_reconciled(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db_url=db.url, max_attempts=2)
    run_id = planned(db)
    (due,) = schedule.take_due(db)
    later = utcnow() + timedelta(seconds=20)
    assert reconcile(settings, db, {due.task_id}, now=later) == 0  # waiting in the broker
    assert reconcile(settings, db, None, now=later) == 0  # the broker cannot be read: nothing is lost
    assert reconcile(settings, db, set(), now=later) == 1  # neither waiting nor started: lost
    (due,) = schedule.take_due(db)
    assert runner.execute(settings, db, run_id, "unit_tests", "an-older-message") == runner.STALE
    for attempt in (1, 2):  # the worker dies mid-stage, twice; its lease runs out
        with db.session() as s:
            stage = s.get(Run, run_id).stages[0]  # type: ignore[union-attr]
            schedule.start(stage, settings.lease_seconds)
            lifecycle.move_run(stage.run, "running") if stage.run.status == "queued" else None
        assert reconcile(settings, db, set()) == 0  # the lease is alive
        assert reconcile(settings, db, set(), now=utcnow() + timedelta(seconds=31)) == 1
        assert run_of(db, run_id).stages[0].status == ("queued" if attempt == 1 else "failed")
    run = run_of(db, run_id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.reason == "stage unit_tests failed: its worker stopped renewing its lease (2 attempts)"
    assert [s.status for s in run.stages] == ["failed", "skipped"]
    assert schedule.take_due(db) == []


HELD_REPRO = """\
import os, pathlib, time
deadline = time.monotonic() + 120
while not pathlib.Path("release").exists() and time.monotonic() < deadline:
    time.sleep(0.1)
os.execvp("dvc", ["dvc", "repro"])
"""


def _retrain(settings: Settings, db_url: str, run_id: int, out: multiprocessing.Queue[str]) -> None:
    database = Database(db_url)
    try:
        out.put(runner.execute(settings, database, run_id, "retrain"))
    finally:
        database.dispose()


def test_a_stage_whose_lease_ran_out_is_taken_over_and_runs_once(tmp_path: Path, project: Project) -> None:
    """The worker is alive but silent (what a stalled or partitioned worker looks like): its lease
    runs out, the reconciler kills its command and the next attempt runs the stage; the first
    attempt's outcome is dropped. DVC never runs twice at once in the worktree."""
    db = Database(f"sqlite:///{tmp_path / 'loopline.db'}")
    db.migrate()
    settings = make_settings(tmp_path, (project.repo_config(),), db_url=db.url)
    base = project.head()
    project.push()
    config = (project.work / "loopline.yml").read_text()
    one = project.commit(
        {
            "hold.py": HELD_REPRO,
            "loopline.yml": config.replace('retrain: "dvc repro"', 'retrain: "python hold.py"'),
            "src/train/train.py": (project.work / "src/train/train.py").read_text() + "\n# again\n",
        }
    )
    project.push()
    prepared = prepare_run(settings, db, [deliver(db, base, one)])
    assert prepared.run_id is not None and "retrain" in prepared.stages
    worktree = Path(run_of(db, prepared.run_id).workspace or "")
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = spawn.Queue()
    first = spawn.Process(target=_retrain, args=(settings, db.url, prepared.run_id, results))
    first.start()
    log = log_path(settings, prepared.run_id, "retrain")
    deadline = time.monotonic() + 60
    while not retrain_of(db, prepared.run_id).pgid and time.monotonic() < deadline:
        time.sleep(0.1)
    pgid = retrain_of(db, prepared.run_id).pgid
    assert pgid and "$ " in log.read_text()
    with db.session() as s:  # its heartbeat is late: the lease ran out
        s.execute(update(Stage).where(Stage.pgid == pgid).values(lease_expires_at=utcnow()))
    assert reconcile(settings, db, set()) == 1
    assert gone(pgid)  # the orphaned command was killed
    first.join(timeout=60)
    assert results.get(timeout=5) == runner.STALE  # its outcome is not recorded
    (worktree / "release").write_text("go")
    assert runner.execute(settings, db, prepared.run_id, "retrain") == "succeeded"
    stage = retrain_of(db, prepared.run_id)
    assert stage.attempt == 2 and stage.lease_owner is None
    assert stage.log.count("$ ") == 2 and "attempt 2" in stage.log
    assert (worktree / "models/model.pkl").is_file()
    assert os.getpid() != pgid
    db.dispose()
