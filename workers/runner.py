"""Walk one stage of a planned run: mark it, call its step, record the result.

A stage that does not succeed ends the run (later stages become ``skipped``); the last stage
to succeed ends it ``succeeded``. Either way the worktree is removed. While a step's command
runs, the run's status is watched: a cancelled (or superseded) run stops it, except a deploy,
which is never interrupted. A stage runs under a lease its heartbeat renews (:mod:`store.schedule`):
a worker that dies is noticed when its lease runs out, and the stage runs again.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig
from pipelines.events import DataObject, Event
from store import deliveries, runs, schedule, stagelogs
from store.blobs import BlobError
from store.clock import utcnow
from store.db import Database, StoreUnavailable
from store.lifecycle import RUNNABLE, TERMINAL, end_run, move_run
from store.runs import ended_runs, forget_workspace, lock_run, origin, stage_of
from workers import artifacts, projects
from workers.datasets import blobs
from workers.gitops import GitError
from workers.heartbeat import beating
from workers.livelog import streaming
from workers.locks import host_lock
from workers.process import kill_group, reporting, stoppable, wait_gone
from workers.projects import log_path, mirror, project_in
from workers.steps import StepContext, StepError, StepResult, registry

log = logging.getLogger(__name__)
#: What :func:`execute` answers for a second message of a stage another worker is running.
ALREADY_RUNNING = "already_running"
#: ... and for a message that is not the stage's current one (it was published again since).
STALE = "stale"
LEASE_LOST = "the lease on this stage was lost: another attempt runs it"
MAX_LOG = 2 * 1024 * 1024
#: Stages that must never run twice at once in one worktree (DVC keeps state in it).
EXCLUSIVE = {"retrain"}
#: Stages that are never stopped once they started.
UNINTERRUPTIBLE = {"deploy"}


@dataclass(frozen=True)
class _Facts:
    """What a stage needs to know about its run, read in the same transaction that starts it."""

    repository: str
    commit: str
    ref: str | None
    objects: list[DataObject]
    classification: dict[str, Any]
    dataset_version: int | None
    #: Files earlier stages produced, by path: their sha256 in object storage.
    outputs: dict[str, str]


def execute(settings: Settings, db: Database, run_id: int, name: str, task_id: str | None = None) -> str:
    """Run stage ``name`` of run ``run_id`` for the message ``task_id``; returns the stage's final
    status, :data:`ALREADY_RUNNING` or :data:`STALE` (the message is not the stage's current one).

    The stage starts under this process's lease, renewed by a heartbeat while the step runs. A
    stage found running under a lease whose holder died is taken over (:func:`take_over`).
    """
    with db.session() as s:
        lock_run(s, run_id)  # a supersession or cancel either happens before this, or sees it
        run = runs.get(s, run_id)
        stage = stage_of(s, run_id, name)
        if run is None or stage is None:
            return "skipped"
        if stage.status in TERMINAL:  # a redelivered message for a stage already done
            return stage.status
        if run.status not in RUNNABLE:  # cancelled or superseded: right before
            return "cancelled"  # a deploy too, so an older run never deploys over a newer one
        if task_id is not None and stage.task_id != task_id:
            return STALE  # republished since (the broker lost it, or its worker died): not this one
        if stage.status == "running":
            if schedule.lease_alive(stage):
                return ALREADY_RUNNING  # a duplicate message while another worker runs it
            dead = True
        else:
            dead = False
            if stage.status != "queued":  # awaiting approval: a stale message
                return stage.status
            schedule.start(stage, settings.lease_seconds)
            if run.status == "queued":
                move_run(run, "running", now=stage.started_at)
            lease = _Lease(stage.id, stage.lease_owner or "", stage.attempt)
            batch = deliveries.of_run(s, origin(s, run).id)
            facts = _Facts(
                repository=run.repository,
                commit=run.commit or "",
                ref=run.ref,
                classification=run.classification or {},
                objects=[o for d in batch for o in Event.from_dict(d.event).objects],
                dataset_version=run.dataset_version,
                outputs={
                    path: sha256
                    for st in sorted(run.stages, key=lambda st: st.position)
                    if st.position < stage.position and st.status == "succeeded"
                    for path, sha256 in ((st.detail or {}).get("outputs") or {}).items()
                },
            )
    if dead:  # its worker died (this message came back with it): run it again, or fail it
        take_over(settings, db, run_id, name, why="its worker died")
        return STALE
    path = log_path(settings, run_id, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("ab") as fh,
        beating(
            settings.lease_seconds / 3,
            lambda: schedule.renew(db, lease.stage_id, lease.owner, lease.attempt, settings.lease_seconds),
        ) as beat,
        reporting(lambda pgid: schedule.record_pgid(db, lease.stage_id, lease.owner, pgid)),
        _alone(settings, run_id, name),
        streaming(db, run_id, name, path, MAX_LOG),  # the web process reads it from the store
    ):
        if lease.attempt > 1:
            fh.write(f"[loopline] attempt {lease.attempt}: the previous one's worker died\n".encode())
        if name in UNINTERRUPTIBLE:
            result = _call(settings, db, run_id, name, facts, fh)
        else:
            with stoppable(lambda: cancelled(db, run_id) or (LEASE_LOST if beat.lost else None)):
                result = _call(settings, db, run_id, name, facts, fh)
    data = path.read_bytes()[-MAX_LOG:]
    key = _save_log(settings, run_id, name, lease.attempt, data)
    return _record(settings, db, run_id, name, result, data.decode("utf-8", errors="replace"), lease, key)


def _save_log(settings: Settings, run_id: int, name: str, attempt: int, data: bytes) -> str | None:
    """The finished log's object name; None when the object storage refused it (the store then
    keeps the whole log). The web process serves it from there: it cannot read this host's disk."""
    try:
        return stagelogs.save(blobs(settings), run_id, name, attempt, data)
    except (BlobError, OSError) as exc:
        log.warning("run %s: the log of stage %s stays in the store only: %s", run_id, name, exc)
        return None


@dataclass(frozen=True)
class _Lease:
    stage_id: int
    owner: str
    attempt: int


def take_over(
    settings: Settings, db: Database, run_id: int, name: str, *, why: str, now: datetime | None = None
) -> str | None:
    """A running stage whose lease holder is gone: kill what its command left running, then
    queue it again as a new attempt, or fail it (and its run) after ``max_attempts``. Returns
    the stage's new status, or None when its lease is alive after all."""
    with db.session() as s:
        lock_run(s, run_id)
        run = runs.get(s, run_id)
        stage = stage_of(s, run_id, name)
        if run is None or stage is None or stage.status != "running" or schedule.lease_alive(stage, now):
            return None
        orphan = schedule.take_over(s, run, stage, max_attempts=settings.max_attempts, why=why, now=now)
        status, ended, workspace, repo = stage.status, run.status in TERMINAL, run.workspace, run.repository
    if orphan is not None and orphan.host == socket.gethostname():
        kill_group(orphan.pgid, signal.SIGKILL)  # e.g. the `dvc repro` of a worker the OOM killer took
        wait_gone(orphan.pgid)  # before the next attempt starts: DVC's lock must be free again
    log.warning(
        "run %s: stage %s %s; %s", run_id, name, why, "failed" if status == "failed" else "queued again"
    )
    if ended:
        recover_release(settings, db, run_id)
        cleanup(settings, db, run_id, repo, workspace)
    return status


def recover_release(settings: Settings, db: Database, run_id: int) -> None:
    """A run that ended while its deploy's canary was on trial: the canary is rolled back."""
    from workers import releases

    if releases.abort_canary_of(db, run_id):
        log.warning("run %s ended during its canary: rolled back", run_id)
        releases.reap(db, settings)


def _alone(settings: Settings, run_id: int, name: str) -> AbstractContextManager[bool]:
    """DVC keeps state in the worktree: one retrain per worktree at a time, whatever the store
    says (an attempt whose lease was lost may still be stopping its command: wait for it)."""
    if name not in EXCLUSIVE:
        return nullcontext(True)
    return host_lock(settings.home, f"workspace-{run_id}")


def cancelled(db: Database, run_id: int) -> str | None:
    """Why the run was cancelled (e.g. "superseded by run 7"), or None while it goes on."""
    try:
        return runs.cancelled_because(db, run_id)
    except StoreUnavailable:  # a store hiccup never kills a running command
        return None


def _call(
    settings: Settings, db: Database, run_id: int, name: str, facts: _Facts, fh: IO[bytes]
) -> StepResult:
    """Call the step; every way it can go wrong becomes a failed stage with the reason in its log."""
    try:
        repo = settings.repo(facts.repository)
        if repo is None:
            raise StepError(f"repository {facts.repository!r} is no longer registered")
        worktree = artifacts.worktree(
            settings, db, repo, run_id, facts.commit, facts.dataset_version, facts.outputs
        )
        ctx = StepContext(
            settings=settings,
            db=db,
            run_id=run_id,
            repo=repo,
            project=project_in(worktree),
            worktree=worktree,
            commit=facts.commit,
            ref=facts.ref,
            log=fh,
            objects=facts.objects,
            classification=facts.classification,
        )
        return registry()[name](ctx)
    except (StepError, ConfigError, GitError, BlobError) as exc:
        fh.write(f"[loopline] {exc}\n".encode())
        return StepResult(status="failed", exit_code=1, detail={"error": str(exc)})
    except Exception as exc:
        log.exception("stage %s of run %s crashed", name, run_id)
        fh.write(traceback.format_exc().encode())
        return StepResult(status="failed", exit_code=1, detail={"error": f"internal error: {exc}"})


def _record(
    settings: Settings,
    db: Database,
    run_id: int,
    name: str,
    result: StepResult,
    text: str,
    lease: _Lease,
    log_object: str | None = None,
) -> str:
    """Store the stage's outcome, move the run on, and return the stage's final status; an
    attempt that lost its lease meanwhile records nothing (the attempt that holds it will)."""
    now = utcnow()
    status = result.status
    with db.session() as s:
        lock_run(s, run_id)
        run = runs.get(s, run_id)
        assert run is not None
        stage = next(st for st in run.stages if st.name == name)
        if (stage.status, stage.lease_owner, stage.attempt) != ("running", lease.owner, lease.attempt):
            log.warning(
                "run %s: stage %s attempt %s lost its lease; its outcome is dropped",
                run_id,
                name,
                lease.attempt,
            )
            return STALE
        if run.status == "cancelled" and status != "succeeded":  # stopped (or moot): say why
            status = "cancelled"
            text += f"[loopline] stage cancelled: {run.reason or 'the run was cancelled'}\n"
            if log_object:  # the stored log says why too
                log_object = _save_log(settings, run_id, name, lease.attempt, text.encode()[-MAX_LOG:])
        schedule.finish(
            stage,
            status,
            exit_code=result.exit_code,
            detail=result.detail,
            log=stagelogs.tail(text) if log_object else text,
            log_object=log_object or None,
            now=now,
        )
        later = [st for st in run.stages if st.position > stage.position]
        if run.status == "cancelled":  # cancelled while this stage ran: record it, move nothing on
            pass
        elif status == "succeeded":
            if later:
                return status
            move_run(run, "succeeded", now=now)
        elif status == "awaiting_approval":
            move_run(run, "awaiting_approval", now=now)
            return status
        else:
            reason = f"stage {name} {status.replace('_', ' ')}"
            if result.detail and result.detail.get("reason"):  # the step's one-line verdict
                reason += f": {result.detail['reason']}"
            end_run(run, status, reason=reason, now=now)
        workspace, repo_name = run.workspace, run.repository
    cleanup(settings, db, run_id, repo_name, workspace)
    return status


def cleanup(settings: Settings, db: Database, run_id: int, repo_name: str, workspace: str | None) -> None:
    """Remove an ended run's worktree on this host (logs, artifacts and releases live in object
    storage; other hosts' copies go in their reconciler's pass: :func:`sweep`)."""
    repo = settings.repo(repo_name)
    if repo is not None:
        _remove(settings, repo, projects.workspace(settings, run_id))
        if workspace:
            _remove(settings, repo, Path(workspace))
    forget_workspace(db, run_id)


def _remove(settings: Settings, repo: RepoConfig, path: Path) -> None:
    mirror_ = mirror(settings, repo)
    if (mirror_.path / "HEAD").exists():
        mirror_.remove_worktree(path)
    if path.is_relative_to(settings.home):  # what git did not know (a half-made worktree)
        shutil.rmtree(path, ignore_errors=True)


def sweep(settings: Settings, db: Database) -> int:
    """Remove this host's worktrees of runs that ended (made here for a stage of a run whose
    other stages ran elsewhere); returns how many."""
    work = settings.home / "work"
    local = {int(p.name): p for p in work.iterdir() if p.name.isdigit()} if work.is_dir() else {}
    if not local:
        return 0
    gone = 0
    for run_id, repository in ended_runs(db, list(local)):
        repo = settings.repo(repository)
        if repo is not None:
            _remove(settings, repo, local[run_id])
            gone += 1
    return gone
