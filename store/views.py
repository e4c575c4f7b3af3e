"""Records as JSON-ready dicts: one shape for the API, the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Delivery, Deployment, ModelVersion, Run, Stage, as_utc
from store.registry import current_deployment, model_version


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
        "detail": stage.detail,
    }


def approval_record(run: Run) -> dict[str, Any] | None:
    """What the approval stage named (commit, model version, sha256) and who decided what, when."""
    stage = next((st for st in run.stages if st.name == "approval"), None)
    return {"status": stage.status, **(stage.detail or {})} if stage else None


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
        "attempt": run.attempt,
        "retry_of": run.retry_of,
        "superseded_by": run.superseded_by,
        "approval": approval_record(run),
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
    }


def chain(session: Session, mv: ModelVersion, dep: Deployment | None) -> dict[str, Any]:
    """The whole lineage of a model version, link by link: the deliveries that started its run →
    the commit → the data (DVC hashes, the run's data files) → the run and its stage results (the
    gate's verdict among them) → the model version (artifact and sha256) → the deployment."""
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
            {**deployment_dict(dep), "approval": approval_record(released_by) if released_by else None}
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
