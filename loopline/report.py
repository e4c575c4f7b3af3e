"""Text and JSON reports for the CLI, read straight from the store."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from loopline.settings import Settings
from store import releases, views
from store.db import Database
from store.models import Delivery, Deployment, ModelVersion, Run

MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "gate_failed": "✗",
    "skipped": "·",
    "cancelled": "⊘",
    "running": "▶",
    "queued": "…",
    "awaiting_approval": "?",
}


def open_store(settings: Settings) -> Database:
    """The store, with its schema brought up to date (a fresh ``LOOPLINE_HOME`` has none yet)."""
    db = Database(settings.database_url)
    db.migrate()
    return db


def format_run(run: dict[str, Any]) -> str:
    ref = (run["ref"] or "").removeprefix("refs/heads/")
    lines = [
        f"run #{run['id']}  {run['repository']}  {ref}@{(run['commit'] or '')[:10]}  "
        f"[{run['trigger']}: {', '.join(run['kinds']) or '-'}]  {run['status'].upper()}"
        + (f"  ({run['reason']})" if run.get("reason") else "")
    ]
    for stage in run.get("stages", []):
        took = f"{stage['duration_seconds']:7.2f}s" if stage["duration_seconds"] is not None else "        "
        lines.append(f"   {MARK.get(stage['status'], ' ')} {stage['name']:<18} {took}  {stage['status']}")
    return "\n".join(lines)


def list_runs(settings: Settings, repo: str | None, status: str | None, limit: int, as_json: bool) -> str:
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if repo:
        query = query.where(Run.repository == repo)
    if status:
        query = query.where(Run.status == status)
    with open_store(settings).session() as s:
        rows = [views.run_dict(r) for r in s.scalars(query)]
    if as_json:
        return json.dumps(rows, indent=2)
    return "\n".join(format_run(r) for r in rows) or "no runs yet"


def show_run(settings: Settings, run_id: int, as_json: bool) -> str:
    with open_store(settings).session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run {run_id}")
        data = views.run_dict(run)
    return json.dumps(data, indent=2) if as_json else format_run(data)


def format_data_version(data_version: dict[str, Any], width: int = 10) -> str:
    """``path=md5…`` for every DVC input and output of a model version."""
    return ", ".join(f"{k}={v[:width]}" for k, v in sorted(data_version.items()) if isinstance(v, str))


def format_version(mv: dict[str, Any], serving: bool = False) -> str:
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(mv["metrics"].items()) if isinstance(v, float))
    branch = (mv["ref"] or "").removeprefix("refs/heads/")
    return (
        f"{mv['name']} v{mv['version']}{'  (production)' if serving else ''}\n"
        f"   commit {mv['commit'][:12]} on {branch}, run #{mv['run_id']}\n"
        f"   metrics: {metrics}\n   params: {json.dumps(mv['params'], sort_keys=True)}\n"
        f"   data: {format_data_version(mv['data_version'])}\n"
        f"   artifact: {mv['artifact_path']}  sha256={mv['sha256'][:16]}…"
    )


def show_models(settings: Settings, name: str | None, as_json: bool) -> str:
    with open_store(settings).session() as s:
        query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc())
        if name:
            query = query.where(ModelVersion.name == name)
        rows = [views.model_dict(mv) for mv in s.scalars(query)]
        active = {
            (d.model_name, d.version)
            for d in s.scalars(select(Deployment).where(Deployment.status == "active"))
        }
    if name and not rows:
        raise ValueError(f"no model {name!r}")
    if as_json:
        return json.dumps(rows, indent=2)
    return (
        "\n".join(format_version(mv, (mv["name"], mv["version"]) in active) for mv in rows) or "no models yet"
    )


def show_event(settings: Settings, event_id: str) -> str:
    with open_store(settings).session() as s:
        delivery = s.get(Delivery, event_id)
        if delivery is None:
            raise ValueError(f"no event {event_id!r}")
        return json.dumps(views.delivery_dict(s, delivery), indent=2)


def show_releases(db: Database, name: str) -> str:
    """Where ``name``'s aliases point and which releases run, with their share of the traffic."""
    with db.session() as s:
        state = releases.state(s, name)
    lines = [f"{name}: " + ", ".join(f"{a} v{v}" for a, v in state["aliases"].items() if v is not None)]
    for rel in state["releases"]:
        lines.append(
            f"   release #{rel['id']}  v{rel['version']}  {rel['status']:<8} {rel['traffic_percent']:>3}%  "
            f"{rel['url'] or '(deploy command)'}"
        )
    return "\n".join(lines)
