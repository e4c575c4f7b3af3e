"""Records as JSON-ready dicts: one shape for the API, the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import DatasetVersion, Delivery, Deployment, ModelVersion, Run, Stage, as_utc
from store.registry import current_deployment, model_version
from store.runs import stage_of


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which Loopline always writes in UTC."""
    return as_utc(value).isoformat() if value else None


def stage_dict(stage: Stage) -> dict[str, Any]:
    duration = None
    if stage.started_at and stage.finished_at:
        duration = round((stage.finished_at - stage.started_at).total_seconds(), 3)
    return {
        "name": stage.name,
        "status": stage.status,
        "started_at": iso(stage.started_at),
        "finished_at": iso(stage.finished_at),
        "duration_seconds": duration,
        "exit_code": stage.exit_code,
        "attempt": stage.attempt,
        "detail": stage.detail,
        "task_id": stage.task_id,
    }


def approval_record(run: Run) -> dict[str, Any] | None:
    """What the approval stage named (commit, model version, sha256) and who decided what, when."""
    stage = next((st for st in run.stages if st.name == "approval"), None)
    return {"status": stage.status, **(stage.detail or {})} if stage else None


def failure(run: Run) -> str | None:
    """Why a run failed, in one line: the first failed stage and what it said last."""
    stage = next((st for st in run.stages if st.status in ("failed", "gate_failed")), None)
    if stage is None:
        return None
    detail = stage.detail if isinstance(stage.detail, dict) else {}
    said = detail.get("error") or detail.get("verdict")
    if not isinstance(said, str) or not said:
        lines = [line for line in (stage.log or "")[-4000:].splitlines() if line.strip()]
        said = lines[-1] if lines else f"exit code {stage.exit_code}"
    return f"{stage.name}: {said.splitlines()[0] if said.strip() else said}"[:240]


def run_dict(run: Run, *, stages: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "repository": run.repository,
        "ref": run.ref,
        "commit": run.commit,
        "before": run.before,
        "trigger": run.trigger,
        "status": run.status,
        "reason": run.reason,
        "kinds": run.kinds,
        "plan": run.plan,
        "model_version": run.model_version,
        "dataset_version": run.dataset_version,
        "attempt": run.attempt,
        "retry_of": run.retry_of,
        "superseded_by": run.superseded_by,
        "approval": approval_record(run),
        "message": run.message
        or next((d.event.get("message") for d in run.deliveries if d.event.get("message")), None),
        "author": run.author,
        "failure": failure(run),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }
    if stages:
        data["stages"] = [stage_dict(s) for s in run.stages]
        data["classification"] = run.classification
        data["deliveries"] = [
            {"id": d.id, "provider": d.provider, "received_at": iso(d.received_at)} for d in run.deliveries
        ]
    return data


def delivery_dict(session: Session, delivery: Delivery) -> dict[str, Any]:
    run = session.get(Run, delivery.run_id) if delivery.run_id else None
    return {
        "id": delivery.id,
        "provider": delivery.provider,
        "delivery_id": delivery.delivery_id,
        "status": delivery.status,
        "error": delivery.error,
        "repository": delivery.repository,
        "received_at": iso(delivery.received_at),
        "event": delivery.event,
        "classification": run.classification if run else None,
        "run_ids": [delivery.run_id] if delivery.run_id else [],
    }


def model_dict(mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "run_id": mv.run_id,
        "repository": mv.repository,
        "commit": mv.commit,
        "ref": mv.ref,
        "branch": mv.branch,
        "commit_message": mv.commit_message,
        "delivery_id": mv.delivery_id,
        "gate": mv.gate,
        "data_version": mv.data_version,
        "dataset": mv.dataset,
        "params": mv.params,
        "metrics": mv.metrics,
        "artifact_path": mv.artifact_path,
        "sha256": mv.sha256,
        "created_at": iso(mv.created_at),
    }


def models_summary(session: Session) -> list[dict[str, Any]]:
    """One entry per registered model: how many versions, the newest, the one serving now."""
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc()))
    models: dict[str, dict[str, Any]] = {}
    for mv in rows:
        entry = models.setdefault(
            mv.name,
            {
                "name": mv.name,
                "latest_version": mv.version,
                "versions": 0,
                "latest_created_at": iso(mv.created_at),
                "latest_gate": mv.gate,
            },
        )
        entry["versions"] += 1
    for name, entry in models.items():
        dep = current_deployment(session, name)
        entry["production_version"] = dep.version if dep else None
    return list(models.values())


def deployment_dict(dep: Deployment) -> dict[str, Any]:
    return {
        "id": dep.id,
        "model": dep.model_name,
        "version": dep.version,
        "run_id": dep.run_id,
        "target": dep.target,
        "url": dep.url,
        "status": dep.status,
        "created_at": iso(dep.created_at),
        "moved": dep.moved,
    }


def chain(session: Session, mv: ModelVersion, dep: Deployment | None) -> dict[str, Any]:
    """The whole lineage of a model version, link by link: the deliveries that started its run →
    the commit → the data (dataset version and its files, DVC hashes, the run's new data files) →
    the run and its stage results (the gate's verdict among them) → the model version (artifact
    and sha256) → the deployment."""
    run = session.get(Run, mv.run_id)
    deliveries = session.scalars(
        select(Delivery).where(Delivery.run_id == mv.run_id).order_by(Delivery.received_at)
    ).all()
    files = (run.classification or {}).get("files", []) if run else []
    released_by = session.get(Run, dep.run_id) if dep else None
    return {
        "deliveries": [
            {
                "id": d.id,
                "provider": d.provider,
                "delivery_id": d.delivery_id,
                "received_at": iso(d.received_at),
                "event": d.event,
            }
            for d in deliveries
        ],
        "commit": {
            "repository": mv.repository,
            "sha": mv.commit,
            "ref": mv.ref,
            "branch": mv.branch,
            "message": mv.commit_message,
        },
        "data": {
            "dvc": {k: v for k, v in mv.data_version.items() if isinstance(v, str)},
            "dvc_stages": mv.data_version.get("_stages", []),
            "params": mv.params,
            "dataset": mv.dataset,
            "files": [f for f in files if f.get("kind") == "data"],
            "objects": [o for d in deliveries for o in d.event.get("objects", [])],
        },
        "run": run_dict(run) if run else None,
        # What the commands ran with: the environment's hash, kind, Python and the sandbox mode.
        "environment": next((st.detail for st in run.stages if st.name == "environment"), None)
        if run
        else None,
        "gate": mv.gate,
        "model_version": model_dict(mv),
        "deployment": (
            {
                **deployment_dict(dep),
                "commit": released_by.commit if released_by else None,
                "approval": approval_record(released_by) if released_by else None,
            }
            if dep
            else None
        ),
    }


def lineage(session: Session, dep: Deployment) -> dict[str, Any]:
    """What serves now and the chain behind it (``GET /api/deployments/current``)."""
    mv = model_version(session, dep.model_name, dep.version)
    if mv is None:
        return {"deployment": deployment_dict(dep), "model_version": None, "run": None, "deliveries": []}
    return chain(session, mv, dep)


def dataset_dict(version: DatasetVersion) -> dict[str, Any]:
    """One dataset version in brief: its number, size, manifest hash and what made it."""
    rows = [e.get("rows") for e in version.manifest]
    return {
        "repository": version.repository,
        "version": version.number,
        "parent": version.parent,
        "manifest_sha256": version.manifest_sha256,
        "files": len(version.manifest),
        "bytes": sum(int(e.get("size") or 0) for e in version.manifest),
        "rows": None if any(r is None for r in rows) else sum(rows),
        "trigger": version.trigger,
        "run_id": version.run_id,
        "created_at": iso(version.created_at),
    }


def dataset_versions(session: Session, repository: str) -> list[dict[str, Any]]:
    """Every dataset version of ``repository`` in brief, newest first."""
    query = (
        select(DatasetVersion)
        .where(DatasetVersion.repository == repository)
        .order_by(DatasetVersion.number.desc())
    )
    return [dataset_dict(v) for v in session.scalars(query)]


def dataset_detail(session: Session, version: DatasetVersion) -> dict[str, Any]:
    """A version with its manifest, the validation report of the run it landed for, the model
    versions trained on it and the profile of the newest one's training data."""
    validation = None
    if version.run_id is not None:
        stage = session.scalars(
            select(Stage).where(Stage.run_id == version.run_id, Stage.name == "validate_data")
        ).one_or_none()
        validation = {"status": stage.status, **(stage.detail or {})} if stage else None
    trained = session.scalars(
        select(ModelVersion)
        .join(Run, Run.id == ModelVersion.run_id)
        .where(Run.repository == version.repository, Run.dataset_version == version.number)
        .order_by(ModelVersion.id.desc())
    ).all()
    return {
        **dataset_dict(version),
        "manifest": version.manifest,
        "validation": validation,
        "models": [{"name": mv.name, "version": mv.version, "sha256": mv.sha256} for mv in trained],
        "profile": trained[0].profile if trained else None,
    }


# Named reads for callers outside the store (the CLI): a dict, or None when there is no such record.


def runs(
    session: Session,
    *,
    repository: str | None = None,
    status: str | None = None,
    branch: str | None = None,
    trigger: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest runs first, optionally of one repository, branch, trigger and status."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if repository:
        query = query.where(Run.repository == repository)
    if branch:
        query = query.where(Run.ref == f"refs/heads/{branch}")
    if status:
        query = query.where(Run.status == status)
    if trigger:
        query = query.where(Run.trigger == trigger)
    return [run_dict(r) for r in session.scalars(query)]


def run(session: Session, run_id: int) -> dict[str, Any] | None:
    found = session.get(Run, run_id)
    return None if found is None else run_dict(found)


def model_versions(session: Session, name: str) -> list[dict[str, Any]]:
    """Every version of model ``name``, the newest first."""
    query = select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.version.desc())
    return [model_dict(mv) for mv in session.scalars(query)]


def stage_log(session: Session, run_id: int, name: str) -> tuple[str | None, str, str | None] | None:
    """A stage's log as its worker last copied it into the store, the stage's status, and the
    object in object storage that holds the whole log once it ended (:mod:`store.stagelogs`)."""
    found = stage_of(session, run_id, name)
    return None if found is None else (found.log, found.status, found.log_object)


def event(session: Session, event_id: str) -> dict[str, Any] | None:
    """A delivery (a webhook, a storage event or a trigger) and what became of it."""
    found = session.get(Delivery, event_id)
    return None if found is None else delivery_dict(session, found)


def event_outcome(session: Session, event_id: str) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """A delivery's status and error, and its run once it has one (``None``s while unknown)."""
    found = session.get(Delivery, event_id)
    if found is None:
        return None, None, None
    return found.status, found.error, run(session, found.run_id) if found.run_id else None
