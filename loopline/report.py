"""Text and JSON reports for the CLI, read straight from the store."""

from __future__ import annotations

import json
from typing import Any

from config.settings import Settings
from pipelines.errors import LooplineError
from store import registry, releases, views
from store.db import Database

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


def format_approval(approval: dict[str, Any] | None) -> str:
    """An approval record: the decision, who, when, the comment, and exactly what it names."""
    if not approval or not approval.get("decision"):
        return "no approval decision"
    version = approval.get("model_version")
    return (
        f"{approval['decision']} by {approval.get('by') or '-'} at {_when(approval.get('at'))}"
        + (f': "{approval["comment"]}"' if approval.get("comment") else "")
        + f"\n  names commit {approval.get('commit')}"
        + (f", {approval.get('model') or 'model'} v{version}" if version is not None else "")
        + (f" (sha256 {approval['sha256'][:16]}…)" if approval.get("sha256") else "")
    )


def list_runs(settings: Settings, repo: str | None, status: str | None, limit: int, as_json: bool) -> str:
    with open_store(settings).session() as s:
        rows = views.runs(s, repository=repo, status=status, limit=limit)
    if as_json:
        return json.dumps(rows, indent=2)
    return "\n".join(format_run(r) for r in rows) or "no runs yet"


def show_run(settings: Settings, run_id: int, as_json: bool) -> str:
    with open_store(settings).session() as s:
        data = views.run(s, run_id)
    if data is None:
        raise LooplineError(f"no run {run_id}")
    return json.dumps(data, indent=2) if as_json else format_run(data)


def format_data_version(data_version: dict[str, Any], width: int = 10) -> str:
    """``path=md5…`` for every DVC input and output of a model version."""
    return ", ".join(f"{k}={v[:width]}" for k, v in sorted(data_version.items()) if isinstance(v, str))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _gate_metric(gate: dict[str, Any] | None) -> str:
    if not gate or gate.get("value") is None:
        return "-"
    return f"{gate['metric']}={gate['value']:.4f}"


def list_models(settings: Settings, as_json: bool) -> str:
    """``loopline models list``: every registered model."""
    with open_store(settings).session() as s:
        models = views.models_summary(s)
    if as_json:
        return json.dumps(models, indent=2)
    if not models:
        return "no models yet"
    rows = [
        [
            m["name"],
            str(m["versions"]),
            f"v{m['latest_version']}",
            f"v{m['production_version']}" if m["production_version"] else "-",
            _gate_metric(m["latest_gate"]),
            _when(m["latest_created_at"]),
        ]
        for m in models
    ]
    return _table(["MODEL", "VERSIONS", "LATEST", "PRODUCTION", "GATE METRIC", "REGISTERED"], rows)


def show_model(settings: Settings, name: str, as_json: bool) -> str:
    """``loopline models show NAME``: its versions, newest first, then its aliases and live
    releases (where each runs, and its latest move to another host)."""
    db = open_store(settings)
    with db.session() as s:
        rows = views.model_versions(s, name)
        current = registry.current_deployment(s, name)
    if not rows:
        raise LooplineError(f"no model {name!r}")
    if as_json:
        return json.dumps(rows, indent=2)
    table = [
        [
            f"v{mv['version']}" + (" *" if current and current.version == mv["version"] else ""),
            mv["commit"][:10],
            mv["branch"] or "-",
            f"#{mv['run_id']}",
            _gate_metric(mv["gate"]),
            "passed" if (mv["gate"] or {}).get("passed") else "-",
            mv["sha256"][:12],
            _when(mv["created_at"]),
        ]
        for mv in rows
    ]
    head = ["VERSION", "COMMIT", "BRANCH", "RUN", "GATE METRIC", "GATE", "SHA256", "REGISTERED"]
    return _table(head, table) + "\n(* serving now)\n\n" + show_releases(db, name)


def format_lineage(record: dict[str, Any]) -> str:
    """A model version and its lineage chain, one link per line."""
    chain, commit = record["lineage"], record["lineage"]["commit"]
    lines = [f"{record['name']} v{record['version']}  registered {_when(record['created_at'])}"]
    for d in chain["deliveries"]:
        lines.append(f"  delivery    {d['provider']} {d['delivery_id']}  received {_when(d['received_at'])}")
    message = (commit["message"] or "").splitlines()[0] if commit["message"] else ""
    lines.append(
        f"  commit      {commit['sha']} on {commit['branch'] or commit['ref'] or '-'}"
        + (f': "{message}"' if message else "")
    )
    lines.append(f"  data        {format_data_version(chain['data']['dvc'])}")
    dataset = chain["data"].get("dataset")
    if dataset:
        lines.append(
            f"  dataset     v{dataset['version']} of {dataset['repository']}"
            f" (manifest {dataset['manifest_sha256'][:16]}…), {len(dataset['files'])} file(s)"
        )
        lines += [
            f"              {f['path']}  {f['sha256'][:12]}  "
            + ("commit" if f["source"] == "commit" else f"landed from {f['source'].get('url')}")
            for f in dataset["files"]
        ]
    lines += [f"              + {f['path']}" for f in chain["data"]["files"]]
    lines.append(f"  params      {json.dumps(chain['data']['params'], sort_keys=True)}")
    run = chain["run"]
    if run:
        lines.append(
            f"  run         #{run['id']} {run['trigger']} [{', '.join(run['kinds'])}] {run['status']}"
        )
        lines += [
            f"              {MARK.get(st['status'], ' ')} {st['name']:<18} {st['status']:<10}"
            + (f" {st['duration_seconds']:.1f}s" if st["duration_seconds"] is not None else "")
            + (f" exit {st['exit_code']}" if st["exit_code"] is not None else "")
            for st in run["stages"]
        ]
    if chain["gate"]:
        lines.append(f"  gate        {chain['gate']['verdict']}")
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(record["metrics"].items()) if isinstance(v, float))
    lines.append(f"  metrics     {metrics}")
    lines.append(f"  artifact    {record['artifact_path']}\n              sha256 {record['sha256']}")
    dep = chain["deployment"]
    if dep:
        lines.append(
            f"  deployment  #{dep['id']} {dep['status']} at {dep['url'] or dep['target']}"
            f" since {_when(dep['created_at'])}"
        )
        if dep.get("approval"):
            lines.append("  approval    " + format_approval(dep["approval"]).replace("\n", "\n            "))
    return "\n".join(lines)


def show_version(settings: Settings, name: str, version: int, as_json: bool) -> str:
    """``loopline models show NAME VERSION``: the version with its whole lineage chain."""
    with open_store(settings).session() as s:
        mv = registry.model_version(s, name, version)
        if mv is None:
            raise LooplineError(f"no version {version} of model {name!r}")
        record = {
            **views.model_dict(mv),
            "lineage": views.chain(s, mv, registry.latest_deployment(s, name, version)),
        }
    return json.dumps(record, indent=2) if as_json else format_lineage(record)


def show_event(settings: Settings, event_id: str) -> str:
    with open_store(settings).session() as s:
        found = views.event(s, event_id)
    if found is None:
        raise LooplineError(f"no event {event_id!r}")
    return json.dumps(found, indent=2)


def show_releases(db: Database, name: str) -> str:
    """Where ``name``'s aliases point and which releases run, with their share of the traffic."""
    with db.session() as s:
        state = releases.state(s, name)
    lines = [f"{name}: " + ", ".join(f"{a} v{v}" for a, v in state["aliases"].items() if v is not None)]
    for rel in state["releases"]:
        where = f"  on {rel['host']}" if rel.get("host") else ""
        lines.append(
            f"   release #{rel['id']}  v{rel['version']}  {rel['status']:<8} {rel['traffic_percent']:>3}%  "
            f"{rel['url'] or '(deploy command)'}{where}"
        )
        if rel.get("moved"):
            lines.append(f"      {rel['moved']}")
    return "\n".join(lines)
