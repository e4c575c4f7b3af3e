"""``/metrics``: the Prometheus exposition, written by prometheus_client from the store's totals.

Not prometheus_client's multiprocess mode: every web and gateway worker already adds what it
counted to the store about once a second (:mod:`store.telemetry`), and the store is what all of
them share, on every host. Multiprocess mode would sum only this host's gunicorn workers, from a
directory of files they must share, and would count again what the store already holds. So a
custom collector reads the store's totals at each scrape; the library owns the text format
(escaping, ``_total`` suffixes, cumulative buckets, the content type).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from store import telemetry
from store.db import Database

RELEASE = ["model", "version", "release"]


class StoreCollector(Collector):
    """Deliveries and runs by status, and each live release's gateway telemetry."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as s:
            counts = telemetry.status_counts(s)
            live = telemetry.live_releases(s)
        for name, what in (("deliveries", "Deliveries"), ("runs", "Runs")):
            family = GaugeMetricFamily(f"loopline_{name}", f"{what} by status.", labels=["status"])
            for status, count in sorted(counts[name].items()):
                family.add_metric([status], count)
            yield family
        traffic = GaugeMetricFamily(
            "loopline_release_traffic_percent",
            "Share of the gateway's requests for the model that the release gets.",
            labels=RELEASE,
        )
        requests = CounterMetricFamily(
            "loopline_release_requests", "Requests the gateway sent to the release.", labels=RELEASE
        )
        errors = CounterMetricFamily(
            "loopline_release_errors",
            "Requests that failed: 5xx answers and releases that did not answer.",
            labels=RELEASE,
        )
        latency = HistogramMetricFamily(
            "loopline_release_latency_seconds",
            "Time from the gateway's forward to the release's full answer.",
            labels=RELEASE,
        )
        predictions = CounterMetricFamily(
            "loopline_release_predictions",
            "Predicted labels in the release's answers (at most 20 per release, then 'other').",
            labels=[*RELEASE, "label"],
        )
        labelled = CounterMetricFamily(
            "loopline_release_labelled",
            "Predicted instances whose true label clients sent back (online accuracy's denominator).",
            labels=RELEASE,
        )
        correct = CounterMetricFamily(
            "loopline_release_correct", "Labelled instances the release predicted right.", labels=RELEASE
        )
        for rel in live:
            labels = [rel.model, str(rel.version), str(rel.release)]
            st = rel.stats
            traffic.add_metric(labels, rel.traffic_percent)
            requests.add_metric(labels, st.requests)
            errors.add_metric(labels, st.errors)
            cumulative, buckets = 0, []
            for key in telemetry.BUCKET_KEYS:
                cumulative += st.buckets.get(key, 0)
                buckets.append((key, cumulative))
            latency.add_metric(labels, buckets, st.latency_sum_us / 1e6)
            for label, count in sorted(st.predictions.items()):
                predictions.add_metric([*labels, label], count)
            labelled.add_metric(labels, st.labelled)
            correct.add_metric(labels, st.correct)
        yield from (traffic, requests, errors, latency, predictions, labelled, correct)


def exposition(db: Database) -> tuple[bytes, str]:
    """The text of one scrape and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(db))
    return generate_latest(registry), CONTENT_TYPE_LATEST
