"""``validate_data``: new data files checked before they may retrain anything."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.steps import StepContext, StepError, StepResult

DRIFT_LIMIT = 3.0  # standardized mean shift beyond which a feature is reported as drifted


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StepError(f"{path.name}: not a readable UTF-8 CSV file ({exc})") from exc
    if not rows:
        raise StepError(f"{path.name}: empty file")
    return rows[0], rows[1:]


def _numeric_columns(header: list[str], rows: list[list[str]]) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for i, name in enumerate(header):
        try:
            columns[name] = [float(r[i]) for r in rows]
        except ValueError:
            continue
    return columns


@dataclass
class Profile:
    header: list[str]
    rows: int
    problems: list[str]
    columns: dict[str, list[float]]


def profile(path: Path) -> Profile:
    """Structure and numeric columns of one CSV file, with everything wrong in it."""
    header, rows = _read(path)
    problems: list[str] = []
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        problems.append("header has empty or duplicate column names")
    if not rows:
        problems.append("no data rows")
    ragged = sum(1 for r in rows if len(r) != len(header))
    if ragged:
        problems.append(f"{ragged} row(s) do not have {len(header)} values")
        return Profile(header, len(rows), problems, {})
    missing = sum(1 for r in rows for v in r if not v.strip())
    if missing:
        problems.append(f"{missing} missing value(s)")
    columns = _numeric_columns(header, rows)
    for name, values in columns.items():
        if any(math.isnan(v) or math.isinf(v) for v in values):
            problems.append(f"column {name!r} has NaN or infinite values")
    return Profile(header, len(rows), problems, columns)


def validate_data(ctx: StepContext) -> StepResult:
    into = ctx.worktree / ctx.project.data_into
    # From the run's classification: a data run checks every object it fetched (removed or
    # superseded ones are not in it), a push the CSV files it added or changed.
    new = [
        ctx.worktree / f["path"]
        for f in ctx.classification.get("files", [])
        if f["kind"] == "data" and f["status"] != "D" and (ctx.objects or f["path"].endswith(".csv"))
    ]
    reference = [p for p in sorted(into.glob("*.csv")) if p not in new]
    ref_header: list[str] | None = None
    ref_columns: dict[str, list[float]] = {}
    for path in reference:
        ref = profile(path)
        ref_header = ref_header or ref.header
        for name, values in ref.columns.items():
            ref_columns.setdefault(name, []).extend(values)
    report: dict[str, Any] = {
        "files": [],
        "reference_files": [p.name for p in reference],
        "drift_limit": DRIFT_LIMIT,
    }
    failed = False
    for path in new:
        found = profile(path)
        header, problems, columns = found.header, found.problems, found.columns
        if ref_header is not None and header != ref_header:
            problems.append(f"columns differ from the existing data: {sorted(set(header) ^ set(ref_header))}")
        drift: dict[str, float] = {}
        for name, values in columns.items():
            baseline = ref_columns.get(name)
            if baseline and len(baseline) > 1 and values:
                spread = statistics.pstdev(baseline) or 1.0
                drift[name] = round(abs(statistics.fmean(values) - statistics.fmean(baseline)) / spread, 4)
        drifted = sorted(n for n, score in drift.items() if score > DRIFT_LIMIT)
        report["files"].append(
            {
                "file": path.name,
                "rows": found.rows,
                "columns": len(header),
                "problems": problems,
                "drift": drift,
                "drifted": drifted,
            }
        )
        failed = failed or bool(problems)
        verdict = "; ".join(problems) if problems else "ok"
        ctx.say(f"{path.name}: {verdict}" + (f" (drifted: {', '.join(drifted)})" if drifted else ""))
    ctx.log.write((json.dumps(report, indent=2) + "\n").encode())
    return StepResult(status="failed" if failed else "succeeded", exit_code=1 if failed else 0, detail=report)
