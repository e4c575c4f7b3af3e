"""Human actions on runs: approve, reject, cancel. Plain state changes; workers do the rest."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.db import Database
from store.models import Run, Stage, utcnow

ACTIVE = ("queued", "running", "awaiting_approval")


class InvalidAction(ValueError):
    """The run is not in a state that allows the action (answered with 409)."""


def _load(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    return run


def _waiting(session: Session, run_id: int) -> Run:
    run = _load(session, run_id)
    if run.status != "awaiting_approval":
        raise InvalidAction(f"run {run_id} is {run.status}, not awaiting approval")
    return run


def approve(db: Database, run_id: int, *, by: str, comment: str | None) -> Run:
    """Approve a waiting run for its exact commit and model version; the relay resumes it."""
    with db.session() as s:
        run = _waiting(s, run_id)
        stage = next(st for st in run.stages if st.name == "approval")
        now = utcnow()
        stage.status, stage.finished_at, stage.exit_code = "succeeded", now, 0
        stage.detail = {
            "decision": "approved",
            "by": by,
            "comment": comment,
            "commit": run.commit,
            "model_version": run.model_version,
            "at": now.isoformat(),
        }
        run.status, run.resume_requested_at = "queued", now
        return run


def reject(db: Database, run_id: int, *, by: str, comment: str | None) -> Run:
    with db.session() as s:
        run = _waiting(s, run_id)
        now = utcnow()
        for stage in run.stages:
            if stage.name == "approval":
                stage.status, stage.finished_at, stage.exit_code = "failed", now, 1
                stage.detail = {"decision": "rejected", "by": by, "comment": comment, "at": now.isoformat()}
            elif stage.status == "queued":
                stage.status = "skipped"
        run.status, run.finished_at = "failed", now
        run.reason = f"rejected by {by}" + (f": {comment}" if comment else "")
        return run


def cancel(db: Database, run_id: int, *, by: str, reason: str | None = None) -> Run:
    """Cancel a queued, running or waiting run; a stage already running finishes its command
    but its result no longer moves the run on."""
    with db.session() as s:
        run = _load(s, run_id)
        if run.status not in ACTIVE:
            raise InvalidAction(
                f"run {run_id} is {run.status}; only {', '.join(ACTIVE)} runs can be cancelled"
            )
        now = utcnow()
        for stage in run.stages:
            if stage.status in ("queued", "awaiting_approval"):
                stage.status = "cancelled"
        run.status, run.finished_at, run.resume_requested_at = "cancelled", now, None
        run.reason = reason or f"cancelled by {by}"
        return run


def cancel_queued(db: Database, repository: str, ref: str, *, reason: str) -> list[int]:
    """Cancel the runs of ``ref`` that no stage has started yet (the branch or tag is gone);
    returns their ids. Runs already under way are left to finish.

    One conditional ``UPDATE``: a worker that starts a stage at the same moment either wins
    (the run is ``running`` and stays so) or finds the run ``cancelled`` and does not start it.
    """
    now = utcnow()
    with db.session() as s:
        ids = list(
            s.scalars(
                update(Run)
                .where(
                    Run.repository == repository,
                    Run.ref == ref,
                    Run.status == "queued",
                    ~Run.stages.any(Stage.status != "queued"),
                )
                .values(status="cancelled", reason=reason, finished_at=now, resume_requested_at=None)
                .returning(Run.id)
            )
        )
        if ids:
            s.execute(
                update(Stage)
                .where(Stage.run_id.in_(ids), Stage.status == "queued")
                .values(status="cancelled")
            )
    return sorted(ids)


def take_resumable(db: Database) -> list[tuple[int, list[str]]]:
    """Claim approved runs (atomically) and return each with its stages still to run."""
    claimed: list[tuple[int, list[str]]] = []
    with db.session() as s:
        ids = list(s.scalars(select(Run.id).where(Run.resume_requested_at.is_not(None))))
    for run_id in ids:
        with db.session() as s:
            result = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.resume_requested_at.is_not(None))
                .values(resume_requested_at=None)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            run = s.get(Run, run_id)
            assert run is not None
            claimed.append((run_id, [st.name for st in run.stages if st.status == "queued"]))
    return claimed


def request_resume(db: Database, run_id: int) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(resume_requested_at=utcnow()))


def finished_workspaces(db: Database) -> list[tuple[int, str, str]]:
    """(run, repository, workspace) of ended runs whose worktree is still there: a run rejected
    or cancelled while no stage was running has no worker to remove it."""
    with db.session() as s:
        rows = s.execute(
            select(Run.id, Run.repository, Run.workspace).where(
                Run.workspace.is_not(None),
                Run.status.in_(("failed", "cancelled", "succeeded", "gate_failed")),
                ~Run.stages.any(Stage.status == "running"),
            )
        )
        return [(run_id, repo, ws) for run_id, repo, ws in rows if ws]


def forget_workspace(db: Database, run_id: int) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(workspace=None))
