"""Walk one stage of a planned run: mark it, call its step, record the result.

A stage that does not succeed ends the run (later stages become ``skipped``); the last stage
to succeed ends it ``succeeded``. Either way the worktree is removed. While a step's command
runs, the run's status is watched: a cancelled (or superseded) run stops it, except a deploy,
which is never interrupted.
"""

from __future__ import annotations

import logging
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from config.settings import Settings
from pipelines.config import ConfigError
from pipelines.events import DataObject, Event
from store.db import Database, StoreUnavailable
from store.models import Delivery, Run, Stage, as_utc, utcnow
from store.runs import forget_workspace, lock_run, origin
from workers.livelog import streaming
from workers.locks import file_lock, lock_path
from workers.process import stoppable
from workers.projects import log_path, mirror, project_in
from workers.steps import StepContext, StepError, StepResult, registry

log = logging.getLogger(__name__)
#: What :func:`execute` answers for a second message of a stage another worker is running.
ALREADY_RUNNING = "already_running"
TERMINAL = {"succeeded", "failed", "skipped", "cancelled", "gate_failed"}
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
    worktree: Path
    objects: list[DataObject]
    classification: dict[str, Any]


def execute(settings: Settings, db: Database, run_id: int, name: str) -> str:
    """Run stage ``name`` of run ``run_id``; returns the stage's final status."""
    with db.session() as s:
        lock_run(s, run_id)  # a supersession or cancel either happens before this, or sees it
        run = s.get(Run, run_id)
        stage = s.scalars(select(Stage).where(Stage.run_id == run_id, Stage.name == name)).one_or_none()
        if run is None or stage is None:
            return "skipped"
        if stage.status in TERMINAL:  # a redelivered message for a stage already done
            return stage.status
        if run.status not in ("queued", "running"):  # cancelled or superseded: right before
            return "cancelled"  # a deploy too, so an older run never deploys over a newer one
        if (
            stage.status == "running"
            and stage.started_at
            and as_utc(stage.started_at) > utcnow() - timedelta(seconds=settings.stage_timeout)
        ):
            return ALREADY_RUNNING  # a duplicate message while another worker runs it (not a lost one)
        stage.status, stage.started_at = "running", utcnow()
        run.status = "running"
        run.started_at = run.started_at or stage.started_at
        deliveries = s.scalars(select(Delivery).where(Delivery.run_id == origin(s, run).id))
        facts = _Facts(
            repository=run.repository,
            commit=run.commit or "",
            ref=run.ref,
            worktree=Path(run.workspace or ""),
            classification=run.classification or {},
            objects=[o for d in deliveries for o in Event.from_dict(d.event).objects],
        )
    path = log_path(settings, run_id, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("ab") as fh,
        _alone(settings, run_id, name) as alone,
        streaming(db, run_id, name, path, MAX_LOG),  # the web process reads it from the store
    ):
        if not alone:  # the database's guard was fooled (e.g. a start time taken for stale)
            fh.write(b"[loopline] another worker is running this stage in this worktree; not again\n")
            return ALREADY_RUNNING
        if name in UNINTERRUPTIBLE:
            result = _call(settings, db, run_id, name, facts, fh)
        else:
            with stoppable(lambda: cancelled(db, run_id)):
                result = _call(settings, db, run_id, name, facts, fh)
    text = path.read_bytes()[-MAX_LOG:].decode("utf-8", errors="replace")
    return _record(settings, db, run_id, name, result, text)


def _alone(settings: Settings, run_id: int, name: str) -> AbstractContextManager[bool]:
    """DVC keeps state in the worktree: one retrain per worktree at a time, whatever the
    store says; yields False when another process holds it."""
    if name not in EXCLUSIVE:
        return nullcontext(True)
    return file_lock(lock_path(settings.home, f"workspace-{run_id}"), wait=False)


def cancelled(db: Database, run_id: int) -> str | None:
    """Why the run was cancelled (e.g. "superseded by run 7"), or None while it goes on."""
    try:
        with db.session() as s:
            row = s.execute(select(Run.status, Run.reason).where(Run.id == run_id)).one_or_none()
    except StoreUnavailable:  # a store hiccup never kills a running command
        return None
    if row is None or row.status != "cancelled":
        return None
    return row.reason or "cancelled"


def _call(
    settings: Settings, db: Database, run_id: int, name: str, facts: _Facts, fh: IO[bytes]
) -> StepResult:
    """Call the step; every way it can go wrong becomes a failed stage with the reason in its log."""
    try:
        repo = settings.repo(facts.repository)
        if repo is None:
            raise StepError(f"repository {facts.repository!r} is no longer registered")
        ctx = StepContext(
            settings=settings,
            db=db,
            run_id=run_id,
            repo=repo,
            project=project_in(facts.worktree),
            worktree=facts.worktree,
            commit=facts.commit,
            ref=facts.ref,
            log=fh,
            objects=facts.objects,
            classification=facts.classification,
        )
        return registry()[name](ctx)
    except (StepError, ConfigError) as exc:
        fh.write(f"[loopline] {exc}\n".encode())
        return StepResult(status="failed", exit_code=1, detail={"error": str(exc)})
    except Exception as exc:
        log.exception("stage %s of run %s crashed", name, run_id)
        fh.write(traceback.format_exc().encode())
        return StepResult(status="failed", exit_code=1, detail={"error": f"internal error: {exc}"})


def _record(settings: Settings, db: Database, run_id: int, name: str, result: StepResult, text: str) -> str:
    """Store the stage's outcome, move the run on, and return the stage's final status."""
    now = utcnow()
    status = result.status
    with db.session() as s:
        lock_run(s, run_id)
        run = s.get(Run, run_id)
        assert run is not None
        if run.status == "cancelled" and status != "succeeded":  # stopped (or moot): say why
            status = "cancelled"
            text += f"[loopline] stage cancelled: {run.reason or 'the run was cancelled'}\n"
        stage = next(st for st in run.stages if st.name == name)
        stage.status, stage.exit_code, stage.log, stage.detail = status, result.exit_code, text, result.detail
        if status != "awaiting_approval":
            stage.finished_at = now
        later = [st for st in run.stages if st.position > stage.position]
        if run.status == "cancelled":  # cancelled while this stage ran: record it, move nothing on
            pass
        elif status == "succeeded":
            if later:
                return status
            run.status, run.finished_at = "succeeded", now
        elif status == "awaiting_approval":
            run.status = "awaiting_approval"
            return status
        else:
            run.status, run.finished_at = result.status, now
            run.reason = f"stage {name} {result.status.replace('_', ' ')}"
            for st in later:
                st.status = "skipped"
        workspace, repo_name = run.workspace, run.repository
    cleanup(settings, db, run_id, repo_name, workspace)
    return status


def cleanup(settings: Settings, db: Database, run_id: int, repo_name: str, workspace: str | None) -> None:
    """Remove an ended run's worktree (logs, artifacts and releases live elsewhere)."""
    repo = settings.repo(repo_name)
    if workspace and repo is not None:
        mirror(settings, repo).remove_worktree(Path(workspace))
    forget_workspace(db, run_id)
