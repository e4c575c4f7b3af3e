"""Human actions and branch supersession on runs: plain state changes; workers do the rest.

Every change reads the run only after :func:`lock_run`, so two writers (a supersession and a
worker starting a stage, an approval and a cancel) never both act on the same old state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.errors import LooplineError
from store.db import Database, lock_row
from store.lifecycle import ACTIVE, RETRYABLE, TERMINAL, end_run, listed, move_run, move_stage
from store.models import Delivery, Run, Stage, as_utc, utcnow


class InvalidAction(LooplineError, ValueError):
    """The run is not in a state that allows the action (answered with 409)."""


def get(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def set_dataset_version(db: Database, run_id: int, number: int) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(dataset_version=number))


def stage_of(session: Session, run_id: int, name: str) -> Stage | None:
    """Stage ``name`` of run ``run_id``."""
    return session.scalars(select(Stage).where(Stage.run_id == run_id, Stage.name == name)).one_or_none()


def cancelled_because(db: Database, run_id: int) -> str | None:
    """Why the run was cancelled (e.g. "superseded by run 7"), or None while it goes on."""
    with db.session() as s:
        row = s.execute(select(Run.status, Run.reason).where(Run.id == run_id)).one_or_none()
    if row is None or row.status != "cancelled":
        return None
    return row.reason or "cancelled"


def lock_run(session: Session, run_id: int) -> None:
    """Take the run's row for the rest of the transaction before reading it (:func:`lock_row`)."""
    lock_row(session, Run, run_id)


def _load(session: Session, run_id: int) -> Run:
    lock_run(session, run_id)
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
        move_run(run, "queued", now=now)  # the row is locked: one decision wins; the next stage is due
        move_stage(stage, "succeeded", now=now)
        stage.exit_code = 0
        stage.detail = {**named, "decision": "approved", "by": by, "comment": comment, "at": now.isoformat()}
        return run


def _end_waiting(
    session: Session, run: Run, stage: Stage, *, status: str, stage_status: str, record: Mapping[str, object]
) -> None:
    """End a waiting run (``record`` joins the approval stage's detail; its ``reason`` the run's)."""
    now = utcnow()
    move_stage(stage, stage_status, now=now)
    stage.exit_code = 1
    stage.detail = {**(stage.detail or {}), **record, "at": now.isoformat()}
    end_run(run, status, reason=str(record["reason"]), now=now)


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


def _end(session: Session, run_id: int, reason: str, superseded_by: int | None = None) -> Run:
    """Cancel a locked, active run. A stage still running is stopped by its worker, which
    watches the run's status; a deploy under way is never interrupted, so it refuses."""
    run = _load(session, run_id)
    if run.status not in ACTIVE:
        raise InvalidAction(f"run {run_id} is {run.status}; only {listed(ACTIVE)} runs can be cancelled")
    if any(st.name == "deploy" and st.status == "running" for st in run.stages):
        raise InvalidAction(f"run {run_id} is deploying; a deploy in progress is never interrupted")
    for stage in run.stages:
        if stage.status == "awaiting_approval":
            move_stage(stage, "cancelled")
    end_run(run, "cancelled", reason=reason, rest="cancelled")
    run.superseded_by = superseded_by
    return run


def cancel(db: Database, run_id: int, *, by: str, reason: str | None = None) -> Run:
    """Cancel a queued, running or waiting run (a running stage is stopped, never a deploy)."""
    with db.session() as s:
        return _end(s, run_id, reason or f"cancelled by {by}")


def supersede(db: Database, run_id: int, *, reason: str | None = None) -> list[int]:
    """Cancel the other active push runs of ``run_id``'s branch: the newest push wins.

    Data runs neither supersede nor are superseded (their files exist only in that run); a run
    that is deploying finishes, and the newer run deploys after it. Returns the cancelled ids.
    """
    with db.session() as s:
        newer = s.get(Run, run_id)
        assert newer is not None
        repository, ref = newer.repository, newer.ref
    if ref is None:
        return []
    return cancel_branch(
        db, repository, ref, reason=reason or f"superseded by run {run_id}", keep=run_id, superseded_by=run_id
    )


def cancel_branch(
    db: Database,
    repository: str,
    ref: str,
    *,
    reason: str,
    keep: int | None = None,
    superseded_by: int | None = None,
) -> list[int]:
    """Cancel the active push runs of a branch (queued, running or awaiting approval) but
    ``keep``; runs that are deploying are left to finish. Returns the cancelled ids."""
    with db.session() as s:
        ids = list(
            s.scalars(
                select(Run.id).where(
                    Run.repository == repository,
                    Run.ref == ref,
                    Run.trigger != "data",
                    Run.status.in_(ACTIVE),
                    Run.id != (keep or 0),
                )
            )
        )
    cancelled = []
    for other in ids:
        try:
            with db.session() as s:
                _end(s, other, reason, superseded_by)
            cancelled.append(other)
        except InvalidAction:  # it ended meanwhile, or it is deploying
            continue
    return cancelled


def newer_run(session: Session, run: Run) -> int | None:
    """A later run of the same branch, if any. A run that came late for an older commit
    (superseded at intake by a run with a smaller id) does not count."""
    return session.scalar(
        select(Run.id)
        .where(
            Run.repository == run.repository,
            Run.ref == run.ref,
            Run.id > run.id,
            or_(Run.superseded_by.is_(None), Run.superseded_by > Run.id),
        )
        .order_by(Run.id)
        .limit(1)
    )


def origin(session: Session, run: Run) -> Run:
    """The run a delivery made, following retries back to it (its deliveries are the inputs)."""
    while run.retry_of is not None:
        earlier = session.get(Run, run.retry_of)
        assert earlier is not None
        run = earlier
    return run


def retry(db: Database, run_id: int, *, by: str) -> Run:
    """A new attempt of a finished run: same commit, same plan, linked to it; a worker makes its
    worktree and runs it. Refused while the run is active or when its branch has a newer run."""
    with db.session() as s:
        run = _load(s, run_id)
        if run.status not in RETRYABLE:
            raise InvalidAction(f"run {run_id} is {run.status}; only {listed(RETRYABLE)} runs can be retried")
        if run.superseded_by is not None:
            raise InvalidAction(f"run {run_id} was superseded by run {run.superseded_by}")
        if run.ref is not None and (later := newer_run(s, run)) is not None:
            raise InvalidAction(f"run {later} is newer on {run.ref}; retry that one instead")
        if "config" in run.plan:
            raise InvalidAction(f"run {run_id} could not read its loopline.yml; push a fix instead")
        first = origin(s, run)
        attempt = run.attempt + 1
        again = Run(
            repository=run.repository,
            ref=run.ref,
            commit=run.commit,
            before=run.before,
            trigger=run.trigger,
            kinds=list(run.kinds),
            classification=run.classification,
            plan=list(run.plan),
            status="queued",
            reason=f"retry of run {run_id} by {by}",
            dedupe_key=f"{first.dedupe_key}#{attempt}",
            attempt=attempt,
            retry_of=run_id,
            dataset_version=run.dataset_version,  # a retry trains on exactly the same data
            resume_requested_at=utcnow(),
            stages=[Stage(name=name, position=i, status="queued") for i, name in enumerate(run.plan)],
        )
        s.add(again)
        s.flush()
        return again


def take_resumable(db: Database) -> list[int]:
    """Claim retries (atomically): a worker makes each one's worktree, then its stages are due."""
    claimed: list[int] = []
    with db.session() as s:
        ids = list(s.scalars(select(Run.id).where(Run.resume_requested_at.is_not(None))))
    for run_id in ids:
        with db.session() as s:
            result = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.resume_requested_at.is_not(None))
                .values(resume_requested_at=None)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(run_id)
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
                Run.status.in_(TERMINAL),
                ~Run.stages.any(Stage.status == "running"),
            )
        )
        return [(run_id, repo, ws) for run_id, repo, ws in rows if ws]


def ended_runs(db: Database, ids: list[int]) -> list[tuple[int, str]]:
    """(run, repository) of those of ``ids`` that ended: a host's worktrees of them can go."""
    with db.session() as s:
        rows = s.execute(
            select(Run.id, Run.repository).where(
                Run.id.in_(ids), Run.status.in_(TERMINAL), ~Run.stages.any(Stage.status == "running")
            )
        )
        return [(run_id, repository) for run_id, repository in rows]


def forget_workspace(db: Database, run_id: int) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(workspace=None))


def take_unreported(db: Database, repositories: Collection[str], since: datetime) -> list[int]:
    """Claim runs (of ``repositories``, created after ``since``) whose status changed since it
    was last sent to the Git host; each claim is atomic, so several relays send it once."""
    if not repositories:
        return []
    with db.session() as s:
        rows = s.execute(
            select(Run.id, Run.status).where(
                Run.repository.in_(repositories),
                Run.created_at >= since,
                or_(Run.reported_status.is_(None), Run.reported_status != Run.status),
            )
        ).all()
    claimed = []
    for run_id, status in rows:
        with db.session() as s:
            result = s.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.status == status,
                    or_(Run.reported_status.is_(None), Run.reported_status != status),
                )
                .values(reported_status=status)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(run_id)
    return claimed


def unreport(db: Database, run_id: int) -> None:
    """Undo a claim whose publish failed, so the next relay pass sends it again."""
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(reported_status=None))


def new(*, repository: str, ref: str | None, commit: str | None, trigger: str) -> Run:
    """A queued run not stored yet: intake plans it, then :func:`insert` stores it."""
    return Run(repository=repository, ref=ref, commit=commit, trigger=trigger, status="queued")


def new_stage(name: str, position: int, **fields: Any) -> Stage:
    """A queued stage of a run not stored yet."""
    return Stage(name=name, position=position, status="queued", **fields)


def insert(db: Database, run: Run, delivery_ids: list[str]) -> tuple[int, bool]:
    """Write the planned ``run`` (with its stages) and link its deliveries in one transaction;
    returns its id and True. If a run with the same ``dedupe_key`` exists, nothing is written:
    returns that run's id and False."""
    try:
        with db.session() as s:
            s.add(run)
            s.flush()
            s.execute(update(Delivery).where(Delivery.id.in_(delivery_ids)).values(run_id=run.id))
        return run.id, True
    except IntegrityError:
        with db.session() as s:
            return s.scalars(select(Run.id).where(Run.dedupe_key == run.dedupe_key)).one(), False


def last_built(db: Database, repository: str, ref: str) -> str | None:
    """The commit of branch ``ref``'s newest push run that finished (not cancelled)."""
    with db.session() as s:
        return s.scalar(
            select(Run.commit)
            .where(
                Run.repository == repository,
                Run.ref == ref,
                Run.trigger == "push",
                Run.status.in_(TERMINAL - {"cancelled"}),
            )
            .order_by(Run.id.desc())
            .limit(1)
        )


def newest_of_commit(db: Database, repository: str, ref: str, commit: str | None) -> int | None:
    """The newest run of ``commit`` on branch ``ref``."""
    with db.session() as s:
        return s.scalar(
            select(Run.id)
            .where(Run.repository == repository, Run.ref == ref, Run.commit == commit)
            .order_by(Run.id.desc())
            .limit(1)
        )


def set_workspace(db: Database, run_id: int, path: str) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(workspace=path))
