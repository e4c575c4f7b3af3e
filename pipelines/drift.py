"""Live drift: the serving model's sampled inputs (and the labels it predicted for them) against
the profile of the data it was trained on, with the same statistics as ``validate_data``
(:mod:`pipelines.profile`: PSI over the reference histogram, KS / chi-square, Bonferroni).

Pure: the profile, the sampled instances and their predicted labels in; a verdict with a reason
that names each drifted feature and its number out. An instance is a list (matched to the
training columns by position, the label column left out) or an object (matched by name).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines import profile as profiles
from pipelines.profile import Column, Table
from pipelines.project import DataValidation, DriftLimits, DriftTrigger

#: Drifted features named in a reason; the rest are counted.
NAMED = 3


@dataclass(frozen=True)
class Window:
    """The newest sampled instances of the serving release, oldest first, with the label the
    release predicted for each (None where the answer did not say)."""

    instances: list[Any]
    labels: list[str | None]


@dataclass(frozen=True)
class DriftCheck:
    #: Instances compared (those that match the training columns).
    compared: int
    #: (feature, PSI) of each drifted input feature, the worst first.
    drifted: tuple[tuple[str, float], ...] = ()
    #: (label column, PSI) when the predicted labels drifted from the training labels.
    predicted: tuple[str, float] | None = None
    #: Per compared column: PSI, p-values, drifted (``pipelines.profile``'s statistics).
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Why to retrain (None: no drift, or too few samples to say).
    reason: str | None = None
    #: One line on what the check saw, fired or not.
    note: str = ""


def label_column(profile: dict[str, Any], instances: Sequence[Any], configured: str | None) -> str | None:
    """The training data's label column: the configured one, else the one column the instances
    lack (the last column, when list instances hold one value fewer than the columns)."""
    columns = list(profile.get("columns", {}))
    if configured is not None:
        return configured if configured in columns else None
    objects = [i for i in instances if isinstance(i, dict)]
    if objects:
        absent = [c for c in columns if not any(c in i for i in objects)]
        return absent[0] if len(absent) == 1 else None
    lengths = Counter(len(i) for i in instances if isinstance(i, list))
    if lengths and lengths.most_common(1)[0][0] == len(columns) - 1:
        return columns[-1]
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _label_number(value: str | None) -> float:
    try:
        return float(value) if value is not None else math.nan
    except ValueError:
        return math.nan


def live_table(profile: dict[str, Any], window: Window, label: str | None) -> tuple[Table, int]:
    """The window as a table of the training columns (the label column from the predicted
    labels), and how many instances matched the columns."""
    reference = profile.get("columns", {})
    features = [c for c in reference if c != label]
    rows: list[dict[str, Any]] = []
    labels: list[str | None] = []
    for instance, predicted in zip(window.instances, window.labels, strict=True):
        if isinstance(instance, list) and len(instance) == len(features):
            rows.append(dict(zip(features, instance, strict=True)))
        elif isinstance(instance, dict) and any(c in instance for c in features):
            rows.append(instance)
        else:
            continue
        labels.append(predicted)
    columns: dict[str, Column] = {}
    for name in features:
        values = [row.get(name) for row in rows]
        if reference[name].get("type") == "number":
            columns[name] = Column("number", "double", np.asarray([_number(v) for v in values]), None)
        else:
            strings = [None if v is None else str(v) for v in values]
            columns[name] = Column("category", "string", None, strings)
    if label is not None and any(v is not None for v in labels):
        if reference[label].get("type") == "number":
            numbers = np.asarray([_label_number(v) for v in labels])
            columns[label] = Column("number", "double", numbers, None)
        else:
            columns[label] = Column("category", "string", None, list(labels))
    return Table("live traffic", len(rows), columns), len(rows)


def check(
    drift: DriftTrigger, limits: DriftLimits, profile: dict[str, Any], window: Window, version: int
) -> DriftCheck:
    """Whether the window drifted from the training data of model version ``version``: a feature
    (or the predicted label) drifts when its PSI is over ``drift.threshold`` and its test agrees
    (``limits``' p-values, as in ``validate_data``); at least ``drift.min_samples`` instances."""
    label = label_column(profile, window.instances, drift.label)
    table, compared = live_table(profile, window, label)
    if compared < drift.min_samples:
        note = f"{compared:,} of the {drift.min_samples:,} sampled inputs needed"
        if window.instances and not compared:
            note += " (the sampled instances do not match the training data's columns)"
        return DriftCheck(compared, note=note)
    strict = DataValidation(
        max_missing=1.0,
        max_out_of_range=1.0,
        drift=DriftLimits(psi=drift.threshold, ks_pvalue=limits.ks_pvalue, chi2_pvalue=limits.chi2_pvalue),
    )
    verdict = profiles.compare(profile, table, strict)
    statistics = {name: stats for name, stats in verdict.drift.items() if stats}
    drifted = tuple(
        sorted(
            (
                (name, float(stats["psi"]))
                for name, stats in statistics.items()
                if stats.get("drifted") and name != label
            ),
            key=lambda item: -item[1],
        )
    )
    by_label = statistics.get(label or "", {})
    predicted = (label, float(by_label["psi"])) if label and by_label.get("drifted") else None
    worst = max(((s.get("psi") or 0.0, n) for n, s in statistics.items()), default=(0.0, "-"))
    window_words = f"over the last {compared:,} sampled inputs"
    if not drifted and predicted is None:
        note = f"no drift {window_words}: highest PSI {worst[0]:.3f} (`{worst[1]}`) ≤ {drift.threshold:g}"
        return DriftCheck(compared, statistics=statistics, note=note)
    parts = []
    if len(drifted) == 1:
        name, score = drifted[0]
        parts.append(f"feature `{name}` drifted, PSI {score:.2f} > {drift.threshold:g}")
    elif drifted:
        named = ", ".join(f"`{n}` (PSI {s:.2f})" for n, s in drifted[:NAMED])
        more = f" and {len(drifted) - NAMED} more" if len(drifted) > NAMED else ""
        parts.append(f"features {named}{more} drifted, PSI > {drift.threshold:g}")
    if predicted is not None:
        parts.append(f"predicted `{predicted[0]}` drifted, PSI {predicted[1]:.2f} > {drift.threshold:g}")
    reason = f"v{version}: {'; '.join(parts)} {window_words}"
    return DriftCheck(compared, drifted, predicted, statistics, reason, reason)
