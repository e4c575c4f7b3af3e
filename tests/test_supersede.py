"""Supersession, retries and the one-retrain-per-worktree lock, on real git repositories, real
subprocesses and both stores (without Celery: the end-to-end tests add the workers)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from config.settings import Settings
from pipelines.events import Event
from service import create_app
from service.state import loopline
from store import runs
from store.db import Database
from store.deliveries import record_delivery
from store.models import Delivery, Deployment, Run, Stage, utcnow
from tests.conftest import Project, make_settings
from workers import runner
from workers.intake import prepare_retry, prepare_run

TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}
#: A unit-test command that records its pid (and its child's), then waits to be stopped.
SLOW = """\
import pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
pathlib.Path("pids").write_text(f"{child.pid} {__import__('os').getpid()}")
time.sleep(120)
"""


def deliver(db: Database, before: str, after: str, ref: str = "refs/heads/main", tag: str = "") -> str:
    event = Event(type="push", repository="churn", ref=ref, before=before, after=after)
    return record_delivery(
        db, provider="git", delivery_id=f"{ref}:{after}{tag}", body=f"{after}{tag}".encode(),
        repository="churn", event=event,
    ).event_id  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path, project: Project, db: Database) -> Settings:
    return make_settings(tmp_path, (project.repo_config(),), db_url=db.url, api_token="s3cret")


def run_of(db: Database, run_id: int | None) -> Run:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        _ = run.stages
        return run


def built(db: Database, commit: str) -> int:
    """A finished run for ``commit``: what the branch was last built at."""
    with db.session() as s:
        run = Run(
            repository="churn", ref="refs/heads/main", commit=commit, trigger="push", status="succeeded",
            dedupe_key=f"built-{commit}",
        )  # fmt: skip
        s.add(run)
        s.flush()
        return run.id


def test_a_newer_push_supersedes_the_queued_run_and_keeps_its_changes(
    settings: Settings, db: Database, project: Project
) -> None:
    base = project.head()
    project.push()
    built(db, base)
    train = project.work / "src/train/train.py"
    one = project.commit({"src/train/train.py": train.read_text() + "\n# tweak\n"})
    project.push()
    first = prepare_run(settings, db, [deliver(db, base, one)])
    two = project.commit({"app/extra.py": "X = 1\n"})
    project.push()
    second = prepare_run(settings, db, [deliver(db, one, two)])
    old, new = run_of(db, first.run_id), run_of(db, second.run_id)
    assert old.status == "cancelled" and old.reason == f"superseded by run {new.id}"
    assert old.superseded_by == new.id and {s.status for s in old.stages} == {"cancelled"}
    assert new.status == "queued" and second.stages[:2] == ("environment", "unit_tests")
    # The newer run diffs against what was last built, so the superseded training change retrains.
    assert new.before == base and set(new.kinds) == {"training_code", "app_code"} and "retrain" in new.plan


def test_a_late_delivery_of_an_older_commit_never_runs(
    settings: Settings, db: Database, project: Project
) -> None:
    base = project.head()
    project.push()
    built(db, base)
    one = project.commit({"app/a.py": "A = 1\n"})
    two = project.commit({"app/b.py": "B = 1\n"})
    project.push()  # both commits in one push; the branch is at `two`
    early = prepare_run(settings, db, [deliver(db, one, two)])
    late_id = deliver(db, base, one)  # e.g. a redelivery of an older push, arriving now
    late = prepare_run(settings, db, [late_id])
    run = run_of(db, late.run_id)
    assert late.stages == () and run.status == "cancelled" and run.superseded_by == early.run_id
    assert run.reason == f"superseded by run {early.run_id}" and {s.status for s in run.stages} == {
        "cancelled"
    }
    assert run_of(db, early.run_id).status == "queued"  # the newer run goes on
    with db.session() as s:
        assert s.get(Delivery, late_id).run_id == run.id  # recorded, linked, processed
        assert s.get(Delivery, late_id).status == "processed"


def test_an_older_commit_delivered_before_the_newer_ones_run_exists(
    settings: Settings, db: Database, project: Project
) -> None:
    base = project.head()
    project.push()
    built(db, base)
    one = project.commit({"src/train/train.py": (project.work / "src/train/train.py").read_text() + "\n#\n"})
    two = project.commit({"docs/notes.md": "notes\n"})
    project.push()
    late = run_of(db, prepare_run(settings, db, [deliver(db, base, one)]).run_id)
    assert late.status == "cancelled" and late.reason == f"superseded: refs/heads/main is now at {two[:12]}"
    newer = run_of(db, prepare_run(settings, db, [deliver(db, one, two)]).run_id)
    assert newer.kinds == ["training_code"] and newer.before == base  # the docs push runs the training change


def test_a_running_stage_is_stopped_with_its_process_group(
    settings: Settings, db: Database, project: Project
) -> None:
    base = project.head()
    project.push()
    built(db, base)
    config = (project.work / "loopline.yml").read_text()
    one = project.commit(
        {
            "slow.py": SLOW,
            "loopline.yml": config.replace(
                'unit_tests: "pytest -q tests/unit"', 'unit_tests: "python slow.py"'
            ),
        }
    )
    project.push()
    first = prepare_run(settings, db, [deliver(db, base, one)])
    worktree = Path(run_of(db, first.run_id).workspace or "")
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(runner.execute(settings, db, first.run_id, "unit_tests"))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not (worktree / "pids").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(running_in(worktree)) >= 2  # the command and its child
    two = project.commit({"app/x.py": "X = 1\n"})
    project.push()
    second = prepare_run(settings, db, [deliver(db, one, two)])
    worker.join(timeout=30)
    assert result == ["cancelled"]
    run = run_of(db, first.run_id)
    assert run.status == "cancelled" and run.superseded_by == second.run_id
    stage = next(st for st in run.stages if st.name == "unit_tests")
    assert stage.status == "cancelled" and stage.finished_at is not None
    assert f"stopping the command: superseded by run {second.run_id}" in stage.log
    assert f"stage cancelled: superseded by run {second.run_id}" in stage.log
    assert {s.status for s in run.stages} == {"cancelled"}
    assert not running_in(worktree)  # the whole group was stopped
    assert run.workspace is None  # and the worktree was removed
    assert runner.execute(settings, db, first.run_id, "integration_tests") == "cancelled"  # never starts


def running_in(directory: Path) -> list[int]:
    """Live processes whose working directory is in ``directory`` (the sandbox shows its
    commands other pids than the host's, so they are found from outside)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)) and not gone(int(entry.name)):
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def waiting_run(db: Database, stages: list[tuple[str, str]], commit: str = "c" * 40) -> int:
    with db.session() as s:
        run = Run(
            repository="churn", ref="refs/heads/main", commit=commit, trigger="push", status="running",
            kinds=["app_code"], plan=[n for n, _ in stages], dedupe_key=f"w{time.monotonic_ns()}",
        )  # fmt: skip
        if any(st == "awaiting_approval" for _, st in stages):
            run.status = "awaiting_approval"
        s.add(run)
        s.flush()
        for i, (name, st) in enumerate(stages):
            s.add(Stage(run_id=run.id, name=name, position=i, status=st, started_at=utcnow()))
        return run.id


def test_a_deploy_in_progress_is_never_interrupted(db: Database) -> None:
    deploying = waiting_run(db, [("unit_tests", "succeeded"), ("deploy", "running")])
    newer = waiting_run(db, [("unit_tests", "queued"), ("deploy", "queued")])
    assert runs.supersede(db, newer) == []
    assert run_of(db, deploying).status == "running"
    with pytest.raises(runs.InvalidAction, match="never interrupted"):
        runs.cancel(db, deploying, by="ada")


def test_a_superseded_run_never_deploys(settings: Settings, db: Database) -> None:
    waiting = waiting_run(
        db, [("unit_tests", "succeeded"), ("approval", "awaiting_approval"), ("deploy", "queued")]
    )
    queued = waiting_run(db, [("unit_tests", "succeeded"), ("deploy", "queued")])
    newer = waiting_run(db, [("unit_tests", "queued"), ("deploy", "queued")])
    assert sorted(runs.supersede(db, newer)) == [waiting, queued]
    with pytest.raises(runs.InvalidAction, match="cancelled, not awaiting approval"):
        runs.approve(db, waiting, by="ada", comment=None)
    # The re-check right before deploy: the stage never starts, nothing is deployed.
    assert runner.execute(settings, db, queued, "deploy") == "cancelled"
    with db.session() as s:
        assert s.scalars(select(Deployment)).all() == []
        assert run_of(db, queued).stages[-1].status == "cancelled"


def test_retry_makes_a_new_attempt_of_the_same_commit(
    settings: Settings, db: Database, project: Project, tmp_path: Path
) -> None:
    from tests.test_actions_relay import Recorder
    from workers.relay import relay_once

    base = project.head()
    project.push()
    one = project.commit({"app/x.py": "X = 1\n"})
    project.push()
    first = prepare_run(settings, db, [deliver(db, base, one)])
    with pytest.raises(runs.InvalidAction, match="only failed, cancelled, gate_failed"):
        runs.retry(db, first.run_id, by="ada")  # still queued
    runs.cancel(db, first.run_id, by="ada")
    again = runs.retry(db, first.run_id, by="ada")
    run = run_of(db, again.id)
    original = run_of(db, first.run_id)
    assert (run.commit, run.plan, run.kinds, run.attempt, run.retry_of) == (
        one, original.plan, original.kinds, 2, original.id
    )  # fmt: skip
    assert run.dedupe_key == f"{original.dedupe_key}#2" and run.reason == f"retry of run {original.id} by ada"
    with pytest.raises(runs.InvalidAction, match=f"run {run.id} is newer"):
        runs.retry(db, first.run_id, by="ada")
    recorder = Recorder()
    relay_once(settings, db, recorder)
    assert recorder.prepared == [run.id] and recorder.resumed == []
    prepared = prepare_retry(settings, db, run.id)
    assert prepared.stages == tuple(original.plan)
    worktree = Path(run_of(db, run.id).workspace or "")
    assert (worktree / "app/x.py").read_text() == "X = 1\n"
    assert runner.execute(settings, db, run.id, "unit_tests") == "succeeded"
    assert prepare_retry(settings, db, run.id).stages == ()  # under way: a redelivery publishes nothing


def test_retry_of_a_superseded_run_is_refused(settings: Settings, db: Database) -> None:
    old = waiting_run(db, [("unit_tests", "queued")])
    newer = waiting_run(db, [("unit_tests", "queued")])
    runs.supersede(db, newer)
    with pytest.raises(runs.InvalidAction, match=f"superseded by run {newer}"):
        runs.retry(db, old, by="ada")


def test_retry_over_http_and_the_cli(settings: Settings, db: Database, tmp_path: Path) -> None:
    failed = waiting_run(db, [("unit_tests", "failed"), ("deploy", "skipped")])
    with db.session() as s:
        s.execute(update(Run).where(Run.id == failed).values(status="failed"))
    app = create_app({"settings": settings, "TESTING": True})
    client = app.test_client()
    assert client.post(f"/api/runs/{failed}/retry").status_code == 401
    answer = client.post(f"/api/runs/{failed}/retry", headers=TOKEN)
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert answer.headers["Location"] == f"/api/runs/{body['id']}"
    assert (body["status"], body["attempt"], body["retry_of"]) == ("queued", 2, failed)
    assert [s["status"] for s in body["stages"]] == ["queued", "queued"]
    conflict = client.post(f"/api/runs/{failed}/retry", headers=TOKEN)
    assert conflict.status_code == 409 and conflict.json["error"] == "invalid_state"
    assert client.post("/api/runs/999/retry", headers=TOKEN).status_code == 404
    with app.app_context():
        loopline().db.dispose()

    env = {"LOOPLINE_HOME": str(tmp_path / "cli"), "LOOPLINE_CONFIG": "", "USER": "grace"}
    cli_db = Database(f"sqlite:///{tmp_path / 'cli' / 'loopline.db'}")
    cli_db.migrate()
    gated = waiting_run(cli_db, [("evaluate", "gate_failed")])
    with cli_db.session() as s:
        s.execute(update(Run).where(Run.id == gated).values(status="gate_failed"))
    from loopline.cli import main

    done = CliRunner().invoke(main, ["retry", str(gated)], env=env)
    assert done.exit_code == 0, done.output
    assert "QUEUED" in done.output and f"retry of run {gated} by grace" in done.output
    again = CliRunner().invoke(main, ["retry", str(gated)], env=env)
    assert again.exit_code == 1 and "is newer" in again.output
    cli_db.dispose()


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import process

    monkeypatch.setattr(process, "STOP_GRACE", 1.0)
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    started = time.monotonic()
    with (tmp_path / "log").open("wb") as log, process.stoppable(lambda: "superseded by run 3"):
        code = process.run_logged(["python", "-c", script], cwd=tmp_path, log=log, timeout=60)
    assert code == -9 and time.monotonic() - started < 30
    assert "[loopline] stopping the command: superseded by run 3" in (tmp_path / "log").read_text()
