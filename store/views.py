"""Records as JSON-ready dicts: one shape for the API, the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Delivery, Deployment, ModelVersion, Run, Stage, as_utc
from store.registry import model_version


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
        "data_version": mv.data_version,
        "params": mv.params,
        "metrics": mv.metrics,
        "artifact_path": mv.artifact_path,
        "sha256": mv.sha256,
        "created_at": iso(mv.created_at),
    }


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


def lineage(session: Session, dep: Deployment) -> dict[str, Any]:
    """The chain behind a deployment: delivery → commit → data → run → stages → model version."""
    mv = model_version(session, dep.model_name, dep.version)
    trained_by = session.get(Run, mv.run_id) if mv else None
    deliveries = session.scalars(select(Delivery).where(Delivery.run_id == mv.run_id)).all() if mv else []
    return {
        "deployment": deployment_dict(dep),
        "model_version": model_dict(mv) if mv else None,
        "run": run_dict(trained_by) if trained_by else None,
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
    }
