"""Data profiles and their comparison: what ``register`` keeps of the training data, and what
``validate_data`` checks new data against. Pure: columns in, JSON-ready dicts and verdicts out.

A profile has, per column: type, missing share, min/max, mean, quantiles, a histogram on fixed
edges (for PSI) and a seeded sample of up to :data:`SAMPLE` values (for the KS test); for text
columns the category counts. Drift statistics are scipy's (``ks_2samp``, ``chisquare``); PSI is
the usual ``Σ (a - e)·ln(a/e)`` over the reference histogram's bins.

A feature has drifted when its PSI is over the limit *and* the test says the difference is not
chance: PSI alone flags small samples by noise, a test alone flags large ones for differences too
small to matter. The p-values are Bonferroni-adjusted for the number of columns tested (one
test per feature at 0.01 over 31 features flagged 2 of 39 clean batches of the example; adjusted,
none), so ``ks_pvalue`` is the chance of failing a clean batch at all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from pipelines.project import DataValidation

SAMPLE = 500
BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_CATEGORIES = 50
_EPSILON = 1e-4  # an empty bin's share, so that ln(a/e) stays finite


@dataclass(frozen=True)
class Column:
    kind: str  # number | category
    dtype: str
    numbers: np.ndarray | None  # floats, NaN where missing
    strings: list[str | None] | None


@dataclass(frozen=True)
class Table:
    name: str
    rows: int
    columns: dict[str, Column]


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        return sorted(name for name, d in self.drift.items() if d.get("drifted"))


def _round(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(f"{value:.8g}")


def merge(tables: list[Table]) -> Table:
    """One table of every row of ``tables`` (columns missing from some are missing there)."""
    names = list(dict.fromkeys(n for t in tables for n in t.columns))
    merged: dict[str, Column] = {}
    for name in names:
        parts = [t.columns.get(name) for t in tables]
        if all(p is not None and p.kind == "number" for p in parts):
            numbers = np.concatenate([p.numbers for p in parts if p is not None and p.numbers is not None])
            merged[name] = Column("number", parts[0].dtype if parts[0] else "double", numbers, None)
        else:
            strings: list[str | None] = []
            for part, table in zip(parts, tables, strict=True):
                if part is None:
                    strings.extend([None] * table.rows)
                elif part.strings is not None:
                    strings.extend(part.strings)
                else:
                    floats = part.numbers if part.numbers is not None else np.empty(0)
                    strings.extend(None if math.isnan(v) else f"{v:g}" for v in floats)
            merged[name] = Column("category", "string", None, strings)
    return Table("+".join(t.name for t in tables), sum(t.rows for t in tables), merged)


def profile(table: Table) -> dict[str, Any]:
    """The JSON-ready profile of ``table``."""
    columns: dict[str, Any] = {}
    for name, column in table.columns.items():
        if column.kind == "number" and column.numbers is not None:
            columns[name] = _number_profile(column.numbers, column.dtype)
        else:
            values = column.strings or []
            present = [v for v in values if v is not None and v != ""]
            counts = Counter(present).most_common()
            top = dict(counts[:TOP_CATEGORIES])
            other = sum(c for _, c in counts[TOP_CATEGORIES:])
            columns[name] = {
                "type": "category",
                "dtype": column.dtype,
                "count": len(values),
                "missing": _round(1 - len(present) / len(values)) if values else 0.0,
                "categories": top,
                "other": other,
            }
    return {"rows": table.rows, "columns": columns}


def _number_profile(values: np.ndarray, dtype: str) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    base: dict[str, Any] = {
        "type": "number",
        "dtype": dtype,
        "count": len(values),
        "missing": _round(1 - len(finite) / len(values)) if len(values) else 0.0,
    }
    if not len(finite):
        return base
    low, high = float(finite.min()), float(finite.max())
    edges = np.linspace(low, high, BINS + 1) if high > low else np.array([low, low + 1.0])
    counts, _ = np.histogram(finite, bins=edges)
    rng = np.random.default_rng(0)  # seeded: the same data gives the same profile
    sample = finite if len(finite) <= SAMPLE else rng.choice(finite, SAMPLE, replace=False)
    return {
        **base,
        "min": _round(low),
        "max": _round(high),
        "mean": _round(float(finite.mean())),
        "std": _round(float(finite.std())),
        "quantiles": {
            str(q): _round(float(v)) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True)
        },
        "histogram": {"edges": [_round(float(e)) for e in edges], "counts": [int(c) for c in counts]},
        "sample": sorted(_round(float(v)) for v in sample),
    }


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins."""
    e = np.maximum(expected / max(expected.sum(), 1), _EPSILON)
    a = np.maximum(actual / max(actual.sum(), 1), _EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _bin(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts of ``values`` in the reference's bins, its outer bins open-ended."""
    inner = np.asarray(edges[1:-1], dtype=float)
    return np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)


def compare(reference: dict[str, Any], table: Table, limits: DataValidation) -> Verdict:
    """Check ``table`` against a reference profile: schema, types, missing values, ranges, rows
    and drift per feature. Each problem is one line naming the file, the column and the number."""
    verdict = Verdict()
    name = table.name
    expected = reference.get("columns", {})
    if table.rows < limits.min_rows:
        verdict.problems.append(f"{name}: {table.rows} row(s), fewer than the {limits.min_rows} required")
    for column in expected:
        if column not in table.columns:
            verdict.problems.append(f"{name}: column {column!r} is missing")
    for column in table.columns:
        if expected and column not in expected:
            verdict.problems.append(f"{name}: column {column!r} is not in the training data")
    mine = profile(table)["columns"]
    tests = max(1, sum(1 for column in expected if column in table.columns))
    for column, got in mine.items():
        if (got["missing"] or 0) > limits.max_missing:
            verdict.problems.append(
                f"{name}: column {column!r} has {got['missing']:.1%} missing values"
                f" (max_missing {limits.max_missing:.1%})"
            )
    for column, ref in expected.items():
        found = table.columns.get(column)
        if found is None:
            continue
        got = mine[column]
        if ref["type"] != got["type"]:
            verdict.problems.append(
                f"{name}: column {column!r} is {got['type']}, the training data's is {ref['type']}"
            )
            continue
        if got["type"] == "number" and found.numbers is not None and "histogram" in ref:
            verdict.drift[column] = _number_drift(column, found.numbers, ref, limits, verdict, name, tests)
        elif got["type"] == "category" and found.strings is not None and ref.get("categories"):
            verdict.drift[column] = _category_drift(column, found.strings, ref, limits, verdict, name, tests)
    return verdict


def _number_drift(
    column: str,
    values: np.ndarray,
    ref: dict[str, Any],
    limits: DataValidation,
    verdict: Verdict,
    name: str,
    tests: int,
) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {}
    low, high = ref["min"], ref["max"]
    span = (high - low) or abs(high) or 1.0
    outside = float(np.mean((finite < low - 1e-9 * span) | (finite > high + 1e-9 * span)))
    if outside > limits.max_out_of_range:
        verdict.problems.append(
            f"{name}: column {column!r} has {outside:.1%} of values outside the training range"
            f" [{low:g}, {high:g}] (max {limits.max_out_of_range:.1%})"
        )
    score = psi(np.asarray(ref["histogram"]["counts"], dtype=float), _bin(finite, ref["histogram"]["edges"]))
    pvalue = float(stats.ks_2samp(np.asarray(ref["sample"], dtype=float), finite).pvalue)
    adjusted = min(1.0, pvalue * tests)
    drifted = score > limits.drift.psi and adjusted < limits.drift.ks_pvalue
    if drifted:
        verdict.problems.append(
            f"{name}: column {column!r} drifted: PSI {score:.3f} > {limits.drift.psi:g},"
            f" KS p-value {adjusted:.2g} < {limits.drift.ks_pvalue:g} (adjusted for {tests} columns)"
        )
    return {
        "psi": _round(score),
        "ks_pvalue": _round(pvalue),
        "ks_pvalue_adjusted": _round(adjusted),
        "out_of_range": _round(outside),
        "drifted": drifted,
    }


def _category_drift(
    column: str,
    values: list[str | None],
    ref: dict[str, Any],
    limits: DataValidation,
    verdict: Verdict,
    name: str,
    tests: int,
) -> dict[str, Any]:
    known = list(ref["categories"])
    seen = Counter(v for v in values if v is not None and v != "")
    if not seen:
        return {}
    expected = np.asarray([ref["categories"][c] for c in known] + [ref.get("other", 0)], dtype=float)
    actual = np.asarray([seen.get(c, 0) for c in known] + [sum(n for c, n in seen.items() if c not in known)])
    score = psi(expected, actual.astype(float))
    keep = expected > 0
    scaled = expected[keep] / expected[keep].sum() * actual[keep].sum()
    pvalue = (
        float(stats.chisquare(actual[keep], scaled).pvalue) if keep.sum() > 1 and actual[keep].sum() else 1.0
    )
    unseen = sum(n for c, n in seen.items() if c not in known) / sum(seen.values())
    adjusted = min(1.0, pvalue * tests)
    drifted = (score > limits.drift.psi and adjusted < limits.drift.chi2_pvalue) or (
        not ref.get("other") and unseen > limits.max_out_of_range
    )
    if drifted:
        verdict.problems.append(
            f"{name}: column {column!r} drifted: PSI {score:.3f} > {limits.drift.psi:g},"
            f" chi-square p-value {adjusted:.2g} (adjusted for {tests} columns),"
            f" {unseen:.1%} unseen categories"
        )
    return {
        "psi": _round(score),
        "chi2_pvalue": _round(pvalue),
        "chi2_pvalue_adjusted": _round(adjusted),
        "unseen": _round(unseen),
        "drifted": drifted,
    }
