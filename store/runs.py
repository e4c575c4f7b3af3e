"""Human actions on runs: approve, reject, cancel. Plain state changes; workers do the rest."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.db import Database
from store.models import Run, Stage, as_utc, utcnow

ACTIVE = ("queued", "running", "awaiting_approval")


class InvalidAction(ValueError):
    """The run is not in a state that allows the action (answered with 409)."""


def _load(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"no run {run_id}")
    return run


class ApprovalMismatch(InvalidAction):
    """The approval request names another commit or model version than the run would ship."""


def _approval_stage(session: Session, run_id: int) -> tuple[Run, Stage]:
    """The waiting run and its approval stage, or :class:`InvalidAction`."""
    run = _load(session, run_id)
    stage = next((st for st in run.stages if st.name == "approval"), None)
    if run.status != "awaiting_approval" or stage is None:
        raise InvalidAction(f"run {run_id} is {run.status}, not awaiting approval")
    return run, stage


def _expires_at(stage: Stage) -> datetime | None:
    raw = (stage.detail or {}).get("expires_at")
    return as_utc(datetime.fromisoformat(raw)) if raw else None


def _claim(session: Session, run_id: int, **values: object) -> None:
    """Move the run out of ``awaiting_approval`` only if nobody else did first (one decision)."""
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.status == "awaiting_approval").values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidAction(f"run {run_id} was decided by someone else meanwhile")


def approve(
    db: Database,
    run_id: int,
    *,
    by: str,
    comment: str | None,
    commit: str | None = None,
    model_version: int | None = None,
) -> Run:
    """Approve a waiting run for the exact commit and model version its approval stage named
    (``deploy`` refuses anything else); the relay resumes it.

    :param commit: if given, the commit the approver means (a prefix of 7+ characters will do).
    :param model_version: if given, the model version the approver means.
    :raises ApprovalMismatch: either names something else than the run would ship.
    """
    with db.session() as s:
        run, stage = _approval_stage(s, run_id)
        now = utcnow()
        expires = _expires_at(stage)
        if expires is not None and now >= expires:
            raise InvalidAction(f"run {run_id}: the approval expired at {expires.isoformat()}")
        named = {"commit": run.commit, "model_version": run.model_version, **(stage.detail or {})}
        shipped = named["commit"] or ""
        if commit is not None and not (len(commit) >= 7 and shipped.startswith(commit.lower())):
            raise ApprovalMismatch(f"run {run_id} would ship commit {named['commit']}, not {commit}")
        if model_version is not None and model_version != named["model_version"]:
            raise ApprovalMismatch(
                f"run {run_id} would ship model version {named['model_version']}, not {model_version}"
            )
        _claim(s, run_id, status="queued", resume_requested_at=now)
        stage.status, stage.finished_at, stage.exit_code = "succeeded", now, 0
        stage.detail = {**named, "decision": "approved", "by": by, "comment": comment, "at": now.isoformat()}
        return run


def _end_waiting(
    session: Session, run: Run, stage: Stage, *, status: str, stage_status: str, record: Mapping[str, object]
) -> None:
    """End a waiting run (``record`` joins the approval stage's detail; its ``reason`` the run's)."""
    now = utcnow()
    _claim(session, run.id, status=status, finished_at=now, reason=record["reason"])
    stage.status, stage.finished_at, stage.exit_code = stage_status, now, 1
    stage.detail = {**(stage.detail or {}), **record, "at": now.isoformat()}
    for later in run.stages:
        if later.status == "queued":
            later.status = "skipped"


def reject(db: Database, run_id: int, *, by: str, comment: str | None) -> Run:
    with db.session() as s:
        run, stage = _approval_stage(s, run_id)
        reason = f"rejected by {by}" + (f": {comment}" if comment else "")
        record = {"decision": "rejected", "by": by, "comment": comment, "reason": reason}
        _end_waiting(s, run, stage, status="failed", stage_status="failed", record=record)
        return run


def expire_approvals(db: Database, now: datetime | None = None) -> list[int]:
    """End every run that waited for approval past its ``expires_after``: ``cancelled``, reason
    "approval expired". Called by the beat's ``reconcile``; approving it afterwards is a 409."""
    now = now or utcnow()
    with db.session() as s:
        waiting = list(s.scalars(select(Run.id).where(Run.status == "awaiting_approval")))
    expired: list[int] = []
    for run_id in waiting:
        try:
            with db.session() as s:
                run, stage = _approval_stage(s, run_id)
                expires = _expires_at(stage)
                if expires is None or now < expires:
                    continue
                record = {
                    "decision": "expired",
                    "reason": f"approval expired (nobody decided by {expires.isoformat()})",
                }
                _end_waiting(s, run, stage, status="cancelled", stage_status="cancelled", record=record)
            expired.append(run_id)
        except InvalidAction:  # decided (or cancelled) meanwhile
            continue
    return expired


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
