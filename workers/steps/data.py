"""``validate_data``: new data files checked against the data the serving model learned from.

The reference is the profile ``register`` stored for the model serving now; before any model
serves, it is the run's other data files under ``data.into``. The checks and statistics are
``pipelines/profile.py``; this step reads the files and records the report (the stage's detail,
served with the run). A failed check fails the run with its first problem as the reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import profile as profiles
from pipelines.profile import Table
from store.registry import current_deployment, model_version
from workers.steps import StepContext, StepResult
from workers.tables import TableError, is_table, read_table

if TYPE_CHECKING:
    from store.models import ModelVersion


def serving_profile(ctx: StepContext) -> tuple[dict[str, Any] | None, str | None]:
    """The training-data profile of the model version serving now, and which one that is."""
    name = ctx.project.model_name
    with ctx.db.session() as s:
        dep = current_deployment(s, name)
        mv: ModelVersion | None = model_version(s, name, dep.version) if dep else None
        if mv is None or not mv.profile:
            return None, None
        return mv.profile, f"{name} v{mv.version} (serving)"


def read_tables(paths: list[Path], root: Path) -> tuple[list[Table], list[str]]:
    """The readable tables among ``paths`` and a problem line for each one that is not."""
    tables: list[Table] = []
    problems: list[str] = []
    for path in paths:
        try:
            tables.append(read_table(path, path.relative_to(root).as_posix()))
        except TableError as exc:
            problems.append(str(exc))
    return tables, problems


def validate_data(ctx: StepContext) -> StepResult:
    into = ctx.worktree / ctx.project.data_into
    # From the run's classification: a data run checks every object it landed (removed or
    # superseded ones are not in it), a push the table files it added or changed.
    new = [
        ctx.worktree / f["path"]
        for f in ctx.classification.get("files", [])
        if f["kind"] == "data" and f["status"] != "D" and (ctx.objects or is_table(f["path"]))
    ]
    limits = ctx.project.data_validate
    reference, source = serving_profile(ctx)
    if reference is None:
        others = sorted(p for p in into.rglob("*") if p.is_file() and is_table(p) and p not in new)
        found, _ = read_tables(others, into)
        if found:
            reference = profiles.profile(profiles.merge(found))
            source = f"{len(found)} other file(s) under {ctx.project.data_into}"
    report: dict[str, Any] = {
        "reference": {"source": source, "rows": reference["rows"] if reference else None},
        "limits": dataclasses.asdict(limits),
        # the dashboard charts ``files[].drift`` (PSI per feature) against this line
        "drift_limit": limits.drift.psi,
        "files": [],
    }
    failures: list[str] = []
    for path in new:
        label = path.relative_to(into).as_posix() if path.is_relative_to(into) else path.name
        if not is_table(path):
            report["files"].append({"file": label, "problems": [], "note": "not a CSV or Parquet table"})
            ctx.say(f"{label}: not a table; kept, not checked")
            continue
        try:
            table = read_table(path, label)
        except TableError as exc:
            problems, rows, columns, drift = [str(exc)], None, 0, {}
        else:
            verdict = profiles.compare(reference or {}, table, limits)
            problems, rows, columns, drift = verdict.problems, table.rows, len(table.columns), verdict.drift
        drifted = sorted(n for n, d in drift.items() if d.get("drifted"))
        report["files"].append(
            {
                "file": label,
                "rows": rows,
                "columns": columns,
                "problems": problems,
                "drift": {n: d["psi"] for n, d in drift.items() if d.get("psi") is not None},
                "statistics": drift,
                "drifted": drifted,
            }
        )
        failures.extend(problems)
        ctx.say(f"{label}: " + ("; ".join(problems) if problems else "ok"))
    ctx.log.write((json.dumps(report, indent=2) + "\n").encode())
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        report["reason"] = failures[0] + more
        return StepResult(status="failed", exit_code=1, detail=report)
    return StepResult(detail=report)
