"""A model's release timeline and live traffic, shaped for the dashboard's one pane of glass.

Every version is one entry: what triggered its run, how it differs from the version before,
its gate verdict against production, who approved it, and each release of it with the canary
trial the deploy stage recorded. Built from the records the pipeline already writes.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import aliases, telemetry
from store.models import LIVE_RELEASES, Delivery, Deployment, ModelVersion, Run, Stage
from store.views import approval_record, dataset_versions, iso

#: Releases whose traffic the dashboard charts: the live ones and the newest others.
TRAFFIC_RELEASES = 6
#: At most this many points per chart.
MAX_POINTS = 120


def _stage(run: Run | None, name: str) -> Stage | None:
    return next((st for st in run.stages if st.name == name), None) if run else None


def trigger(session: Session, run: Run | None) -> dict[str, Any]:
    """What started ``run``: its trigger, the commit message, and the data files it brought."""
    if run is None:
        return {}
    deliveries = session.scalars(select(Delivery).where(Delivery.run_id == run.id)).all()
    files = (run.classification or {}).get("files", [])
    return {
        "kind": run.trigger,
        "message": run.message
        or next((d.event["message"] for d in deliveries if d.event.get("message")), None),
        "author": run.author,
        "data_files": [f.get("path") for f in files if f.get("kind") == "data"][:20],
        "objects": [
            {"key": o.get("key"), "size": o.get("size")}
            for d in deliveries
            for o in d.event.get("objects", [])
        ][:20],
        "dataset_version": getattr(run, "dataset_version", None),
    }


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    keys = sorted(set(old) | set(new), key=str)
    return [{"key": k, "from": old.get(k), "to": new.get(k)} for k in keys if old.get(k) != new.get(k)]


def diff(prev: ModelVersion | None, mv: ModelVersion) -> dict[str, Any] | None:
    """What changed from the version before: params, data (DVC hashes), code commit."""
    if prev is None:
        return None

    def data(v: ModelVersion) -> dict[str, Any]:
        return {k: val for k, val in (v.data_version or {}).items() if isinstance(val, str)}

    return {
        "from_version": prev.version,
        "params": _changes(_flat(prev.params or {}), _flat(mv.params or {})),
        "data": _changes(data(prev), data(mv)),
        "commit": None if prev.commit == mv.commit else {"from": prev.commit, "to": mv.commit},
    }


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"n": 1}}`` → ``{"train.n": 1}``: nested params compare key by key."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def release(session: Session, dep: Deployment, stats: telemetry.ReleaseStats) -> dict[str, Any]:
    """One release of a version: where it stands, the run (and commit) that released it, who
    approved that, and the canary trial as the deploy stage watched it."""
    run = session.get(Run, dep.run_id)
    stage = _stage(run, "deploy")
    detail = (stage.detail or {}) if stage else {}
    if detail.get("release") not in (None, dep.id):
        detail = {}
    trial = None
    if "series" in detail or "verdict" in detail:
        trial = {
            "verdict": detail.get("verdict"),
            "reason": detail.get("reason") or detail.get("error"),
            "limits": detail.get("limits"),
            "series": detail.get("series", []),
            "started_at": iso(stage.started_at) if stage else None,
            "finished_at": iso(stage.finished_at) if stage else None,
        }
    return {
        "id": dep.id,
        "version": dep.version,
        "status": dep.status,
        "traffic_percent": dep.traffic_percent,
        "target": dep.target,
        "url": dep.url,
        "created_at": iso(dep.created_at),
        "run_id": dep.run_id,
        "commit": run.commit if run else None,
        "approval": approval_record(run) if run else None,
        "deploy_status": stage.status if stage else None,
        "trial": trial,
        "telemetry": stats.to_dict(),
    }


def timeline(session: Session, model: str, limit: int = 50) -> dict[str, Any]:
    """The model's versions, newest first, each with its trigger, diff, gate and releases."""
    versions = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.name == model)
        .order_by(ModelVersion.version.desc())
        .limit(limit + 1)
    ).all()
    deps = session.scalars(
        select(Deployment).where(Deployment.model_name == model).order_by(Deployment.id.desc())
    ).all()
    numbers = telemetry.stats(session, [d.id for d in deps])
    pointing = aliases.aliases(session, model)
    entries = []
    for i, mv in enumerate(versions[:limit]):
        run = session.get(Run, mv.run_id)
        prev = versions[i + 1] if i + 1 < len(versions) else None
        approval = approval_record(run) if run else None
        entries.append(
            {
                "version": mv.version,
                "created_at": iso(mv.created_at),
                "branch": mv.branch or (mv.ref or "").removeprefix("refs/heads/") or None,
                "ref": mv.ref,
                "commit": mv.commit,
                "commit_message": mv.commit_message,
                "run_id": mv.run_id,
                "run_status": run.status if run else None,
                "deployable": any(d.version == mv.version for d in deps)
                or bool(run and "deploy" in (run.plan or [])),
                "trigger": trigger(session, run),
                "diff": diff(prev, mv),
                "metrics": mv.metrics,
                "params": mv.params,
                "gate": mv.gate,
                "approval": approval,
                "aliases": sorted(a for a, v in pointing.items() if v == mv.version),
                "releases": [release(session, d, numbers[d.id]) for d in deps if d.version == mv.version],
            }
        )
    return {"name": model, "aliases": pointing, "versions": entries}


def traffic(session: Session, model: str, minutes: int) -> dict[str, Any]:
    """Request rate, errors and latency over the last ``minutes`` for the model's live releases
    and newest others, plus which applications call which version."""
    deps = session.scalars(
        select(Deployment).where(Deployment.model_name == model).order_by(Deployment.id.desc())
    ).all()
    shown = [d for d in deps if d.status in LIVE_RELEASES]
    shown += [d for d in deps if d not in shown][: max(0, TRAFFIC_RELEASES - len(shown))]
    span = minutes * 60
    slice_ = telemetry.SAMPLE_SECONDS
    step = max(slice_, math.ceil(span / MAX_POINTS / slice_) * slice_)
    now = time.time()
    points = telemetry.samples(session, [d.id for d in shown], now - span, step)
    totals = telemetry.stats(session, [d.id for d in deps])
    consumers: dict[str, dict[str, Any]] = {}
    for dep in deps:
        for app, counts in totals[dep.id].to_dict()["applications"].items():
            entry = consumers.setdefault(
                app, {"application": app, "requests": 0, "errors": 0, "versions": {}}
            )
            entry["requests"] += counts["requests"]
            entry["errors"] += counts["errors"]
            by_version = entry["versions"]
            by_version[str(dep.version)] = by_version.get(str(dep.version), 0) + counts["requests"]
    return {
        "name": model,
        "minutes": minutes,
        "step_seconds": step,
        "now": int(now),
        "releases": [
            {
                "id": d.id,
                "version": d.version,
                "status": d.status,
                "traffic_percent": d.traffic_percent,
                "points": points[d.id],
            }
            for d in shown
        ],
        "applications": sorted(consumers.values(), key=lambda c: -c["requests"]),
    }


def data(session: Session, model: str, limit: int = 20) -> dict[str, Any]:
    """The model's repository's dataset versions and the data batches that reached it, newest
    first: what each run's ``validate_data`` stage found per file — rows, columns, problems, and
    drift per feature against the serving model's training data (``workers/steps/data.py``)."""
    repository = session.scalar(select(ModelVersion.repository).where(ModelVersion.name == model).limit(1))
    stages = session.execute(
        select(Run, Stage)
        .join(Stage, Stage.run_id == Run.id)
        .where(Run.repository == repository, Stage.name == "validate_data", Stage.detail.is_not(None))
        .order_by(Run.id.desc())
        .limit(limit)
    ).all()
    return {
        "name": model,
        "repository": repository,
        #: The repository's data ledger: every version, its size and what changed (store/datasets.py).
        "datasets": dataset_versions(session, repository)[:limit] if repository else [],
        "batches": [
            {
                "run_id": run.id,
                "status": stage.status,
                "created_at": iso(run.created_at),
                "dataset_version": getattr(run, "dataset_version", None),
                "files": (stage.detail or {}).get("files", []),
                "reference_files": (stage.detail or {}).get("reference_files", []),
                "drift_limit": (stage.detail or {}).get("drift_limit"),
            }
            for run, stage in stages
        ],
    }
