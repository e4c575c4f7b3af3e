"""Release telemetry: what the serving gateway counted, summed over every web worker.

Each web worker aggregates in memory and adds its deltas here about once a second (one
transaction, whatever the traffic), so any worker's ``/metrics``, the API and the canary
watcher all read the same totals from the store they already use. Redis would also add up,
but the web process has no broker dependency (an acknowledged webhook must survive a broker
outage) and the numbers belong with the deployment records they describe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from store.db import Database
from store.models import LIVE_RELEASES, Delivery, Deployment, ReleaseMetric, ReleaseSample, Run

#: Latency bucket upper bounds in seconds (Prometheus ``le``); the last bucket is ``+Inf``.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
BUCKET_KEYS = tuple("+Inf" if b == math.inf else repr(b) for b in BUCKETS)
#: Distinct prediction labels counted per release per worker; the rest are counted as "other".
MAX_LABELS = 20
OTHER = "other"
#: Distinct calling applications (``X-Loopline-App``) counted per release per worker.
MAX_APPS = 50
#: Requests without an application key are counted under this name.
ANONYMOUS = "(none)"
#: Length of one slice of the time series (``release_samples``), and how long slices are kept.
SAMPLE_SECONDS = 10
RETENTION_SECONDS = 14 * 24 * 3600
#: Series also kept over time (predictions only as totals).
SAMPLED = frozenset(("requests", "errors", "latency", "app", "app_errors"))

#: (deployment id, series, key) → amount to add
Deltas = Mapping[tuple[int, str, str], int]

_ADD = text(
    "INSERT INTO release_metrics (deployment_id, series, key, value) "
    "VALUES (:deployment_id, :series, :key, :value) "
    "ON CONFLICT (deployment_id, series, key) DO UPDATE SET value = release_metrics.value + excluded.value"
)
_SAMPLE = text(
    "INSERT INTO release_samples (deployment_id, at, series, key, value) "
    "VALUES (:deployment_id, :at, :series, :key, :value) "
    "ON CONFLICT (deployment_id, at, series, key) "
    "DO UPDATE SET value = release_samples.value + excluded.value"
)
_pruned_at = 0.0


def add(db: Database, deltas: Deltas, now: float | None = None) -> None:
    """Add ``deltas`` to the stored totals and to the current slice of the time series, in one
    transaction (an upsert per counter); about once an hour, drop slices past the retention."""
    global _pruned_at
    if not deltas:
        return
    now = time.time() if now is None else now
    with db.session() as s:
        add_in(s, deltas, now)
        if now - _pruned_at > 3600:
            _pruned_at = now
            s.execute(delete(ReleaseSample).where(ReleaseSample.at < now - RETENTION_SECONDS))


def add_in(s: Session, deltas: Deltas, now: float) -> None:
    """:func:`add` inside the caller's transaction (feedback: the claim and its counts commit
    together, so a failed commit leaves neither)."""
    at = int(now) // SAMPLE_SECONDS * SAMPLE_SECONDS
    rows = [{"deployment_id": d, "series": se, "key": k, "value": v} for (d, se, k), v in deltas.items()]
    if not rows:
        return
    s.execute(_ADD, rows)
    sampled = [r | {"at": at} for r in rows if r["series"] in SAMPLED]
    if sampled:  # feedback adds only ``outcomes``, which has no time series
        s.execute(_SAMPLE, sampled)


@dataclass
class ReleaseStats:
    requests: int = 0
    errors: int = 0
    latency_sum_us: int = 0
    buckets: dict[str, int] = field(default_factory=dict)  # non-cumulative, by BUCKET_KEYS
    predictions: dict[str, int] = field(default_factory=dict)
    apps: dict[str, int] = field(default_factory=dict)
    app_errors: dict[str, int] = field(default_factory=dict)
    #: Instances whose true label came back (``POST /api/models/<name>/feedback``), and how
    #: many of those the release predicted right.
    labelled: int = 0
    correct: int = 0

    @property
    def online_accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def count(self, series: str, key: str, value: int) -> None:
        """Add one stored counter to these numbers."""
        if series == "requests":
            self.requests += value
        elif series == "errors":
            self.errors += value
        elif series == "latency_sum_us":
            self.latency_sum_us += value
        elif series == "outcomes" and key in ("labelled", "correct"):
            setattr(self, key, getattr(self, key) + value)
        else:
            into = {
                "latency": self.buckets,
                "predictions": self.predictions,
                "app": self.apps,
                "app_errors": self.app_errors,
            }.get(series)
            if into is not None:
                into[key] = into.get(key, 0) + value

    def minus(self, before: ReleaseStats) -> ReleaseStats:
        """What was counted since ``before`` (a canary trial's window of the stable release)."""

        def sub(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

        return ReleaseStats(
            self.requests - before.requests,
            self.errors - before.errors,
            self.latency_sum_us - before.latency_sum_us,
            sub(self.buckets, before.buckets),
            sub(self.predictions, before.predictions),
            sub(self.apps, before.apps),
            sub(self.app_errors, before.app_errors),
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of latency, interpolated inside its bucket like Prometheus'
        ``histogram_quantile`` (so it is as precise as the buckets are)."""
        total = sum(self.buckets.values())
        if not total:
            return None
        rank, seen, lower = q * total, 0, 0.0
        for bound, key in zip(BUCKETS, BUCKET_KEYS, strict=True):
            count = self.buckets.get(key, 0)
            if count and seen + count >= rank:
                if bound == math.inf:
                    return lower * 1000
                return (lower + (bound - lower) * (rank - seen) / count) * 1000
            seen += count
            lower = bound
        raise AssertionError("unreachable: the buckets hold every request")

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "latency_ms": {
                "p50": _round(self.quantile_ms(0.5)),
                "p99": _round(self.quantile_ms(0.99)),
                "mean": _round(self.latency_sum_us / 1000 / self.requests if self.requests else None),
            },
            "latency_buckets": {k: self.buckets.get(k, 0) for k in BUCKET_KEYS},
            "predictions": dict(sorted(self.predictions.items(), key=lambda kv: -kv[1])),
            "online_accuracy": {
                "labelled": self.labelled,
                "correct": self.correct,
                "accuracy": None if self.online_accuracy is None else round(self.online_accuracy, 4),
            },
            "applications": {
                app: {"requests": n, "errors": self.app_errors.get(app, 0)}
                for app, n in sorted(self.apps.items(), key=lambda kv: -kv[1])
            },
        }


def stats(session: Session, deployment_ids: Iterable[int]) -> dict[int, ReleaseStats]:
    """The totals of each deployment (an empty :class:`ReleaseStats` when nothing was counted)."""
    ids = list(deployment_ids)
    result = {i: ReleaseStats() for i in ids}
    if not ids:
        return result
    rows = session.execute(
        select(
            ReleaseMetric.deployment_id, ReleaseMetric.series, ReleaseMetric.key, ReleaseMetric.value
        ).where(ReleaseMetric.deployment_id.in_(ids))
    )
    for dep_id, series, key, value in rows:
        result[dep_id].count(series, key, value)
    return result


def samples(
    session: Session, deployment_ids: Iterable[int], since: float, step: int = SAMPLE_SECONDS
) -> dict[int, list[dict[str, Any]]]:
    """Each deployment's traffic since ``since`` (epoch seconds), one point per ``step`` seconds
    (a multiple of :data:`SAMPLE_SECONDS`) that saw requests: request rate, errors and latency."""
    ids = list(deployment_ids)
    slices: dict[int, dict[int, ReleaseStats]] = {i: {} for i in ids}
    if ids:
        rows = session.execute(
            select(
                ReleaseSample.deployment_id,
                ReleaseSample.at,
                ReleaseSample.series,
                ReleaseSample.key,
                ReleaseSample.value,
            ).where(ReleaseSample.deployment_id.in_(ids), ReleaseSample.at >= int(since))
        )
        for dep_id, at, series, key, value in rows:
            slices[dep_id].setdefault(at // step * step, ReleaseStats()).count(series, key, value)
    return {
        dep_id: [
            {
                "t": at,
                "requests": st.requests,
                "rate_per_s": round(st.requests / step, 3),
                "errors": st.errors,
                "error_rate": round(st.error_rate, 4),
                "p50_ms": _round(st.quantile_ms(0.5)),
                "p99_ms": _round(st.quantile_ms(0.99)),
                "applications": st.apps,
            }
            for at, st in sorted(points.items())
        ]
        for dep_id, points in slices.items()
    }


def trial_point(elapsed: float, canary: ReleaseStats, stable: ReleaseStats | None) -> dict[str, Any]:
    """One look of the canary watcher: both releases' numbers so far in the trial (what the
    verdict judges), for the trial's charts."""

    def numbers(st: ReleaseStats) -> dict[str, Any]:
        return {
            "requests": st.requests,
            "errors": st.errors,
            "error_rate": round(st.error_rate, 4),
            "p99_ms": _round(st.quantile_ms(0.99)),
        }

    point = {"t": round(elapsed, 1), "canary": numbers(canary)}
    if stable is not None:
        point["stable"] = numbers(stable)
    return point


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class LiveRelease:
    """A release that takes or may take traffic (active, canary, standby), with its totals."""

    model: str
    version: int
    release: int
    traffic_percent: int
    stats: ReleaseStats


def live_releases(session: Session) -> list[LiveRelease]:
    """Every live release in deployment order, with what the gateway counted for it."""
    deps = session.scalars(
        select(Deployment).where(Deployment.status.in_(LIVE_RELEASES)).order_by(Deployment.id)
    ).all()
    numbers = stats(session, [d.id for d in deps])
    return [LiveRelease(d.model_name, d.version, d.id, d.traffic_percent, numbers[d.id]) for d in deps]


def status_counts(session: Session) -> dict[str, dict[str, int]]:
    """How many deliveries and runs are in each status: ``{"deliveries": {...}, "runs": {...}}``."""
    counts: dict[str, dict[str, int]] = {}
    for name, model in (("deliveries", Delivery), ("runs", Run)):
        rows = session.execute(select(model.status, func.count()).group_by(model.status))
        counts[name] = {status: count for status, count in rows}
    return counts
