"""Release telemetry: what the serving gateway counted, summed over every web worker.

Each web worker aggregates in memory and adds its deltas here about once a second (one
transaction, whatever the traffic), so any worker's ``/metrics``, the API and the canary
watcher all read the same totals from the store they already use. Redis would also add up,
but the web process has no broker dependency (an acknowledged webhook must survive a broker
outage) and the numbers belong with the deployment records they describe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from store.db import Database
from store.models import LIVE_RELEASES, Delivery, Deployment, ReleaseMetric, Run

#: Latency bucket upper bounds in seconds (Prometheus ``le``); the last bucket is ``+Inf``.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
BUCKET_KEYS = tuple("+Inf" if b == math.inf else repr(b) for b in BUCKETS)
#: Distinct prediction labels counted per release per worker; the rest are counted as "other".
MAX_LABELS = 20
OTHER = "other"

#: (deployment id, series, key) → amount to add
Deltas = Mapping[tuple[int, str, str], int]

_ADD = text(
    "INSERT INTO release_metrics (deployment_id, series, key, value) "
    "VALUES (:deployment_id, :series, :key, :value) "
    "ON CONFLICT (deployment_id, series, key) DO UPDATE SET value = release_metrics.value + excluded.value"
)


def add(db: Database, deltas: Deltas) -> None:
    """Add ``deltas`` to the stored counters in one transaction (an upsert per counter)."""
    if deltas:
        with db.session() as s:
            s.execute(
                _ADD,
                [
                    {"deployment_id": d, "series": se, "key": k, "value": v}
                    for (d, se, k), v in deltas.items()
                ],
            )


@dataclass
class ReleaseStats:
    requests: int = 0
    errors: int = 0
    latency_sum_us: int = 0
    buckets: dict[str, int] = field(default_factory=dict)  # non-cumulative, by BUCKET_KEYS
    predictions: dict[str, int] = field(default_factory=dict)
    #: Instances whose true label came back (``POST /api/models/<name>/feedback``), and how
    #: many of those the release predicted right.
    labelled: int = 0
    correct: int = 0

    @property
    def online_accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

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
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "latency_ms": {
                "p50": ms(self.quantile_ms(0.5)),
                "p99": ms(self.quantile_ms(0.99)),
                "mean": ms(self.latency_sum_us / 1000 / self.requests if self.requests else None),
            },
            "latency_buckets": {k: self.buckets.get(k, 0) for k in BUCKET_KEYS},
            "predictions": dict(sorted(self.predictions.items(), key=lambda kv: -kv[1])),
            "online_accuracy": {
                "labelled": self.labelled,
                "correct": self.correct,
                "accuracy": None if self.online_accuracy is None else round(self.online_accuracy, 4),
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
        st = result[dep_id]
        if series == "requests":
            st.requests += value
        elif series == "errors":
            st.errors += value
        elif series == "latency_sum_us":
            st.latency_sum_us += value
        elif series == "latency":
            st.buckets[key] = st.buckets.get(key, 0) + value
        elif series == "predictions":
            st.predictions[key] = st.predictions.get(key, 0) + value
        elif series == "outcomes" and key in ("labelled", "correct"):
            setattr(st, key, getattr(st, key) + value)
    return result


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
