"""The canary verdict: promote, roll back, or keep watching. Pure, so it is table-tested."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.project import DeployConfig


@dataclass(frozen=True)
class Verdict:
    decision: str  # promote | rollback | wait
    reason: str


def judge(
    config: DeployConfig, *, requests: int, errors: int, p99_ms: float | None, elapsed: float
) -> Verdict:
    """Judge the canary's numbers after ``elapsed`` seconds of its window.

    Too many errors roll it back as soon as ``min_requests`` have been seen; the rest is
    decided when the window is over.
    """
    rate = errors / requests if requests else 0.0
    errors_text = f"error rate {rate:.1%} ({errors}/{requests} requests)"
    if requests and requests >= config.min_requests and rate > config.max_error_rate:
        return Verdict("rollback", f"{errors_text} > max_error_rate {config.max_error_rate:.1%}")
    if elapsed < config.canary_window_seconds:
        return Verdict("wait", errors_text)
    window = f"in {config.canary_window_seconds:g}s"
    if requests < config.min_requests:
        return Verdict(
            "rollback",
            f"only {requests} requests {window} (min_requests {config.min_requests}): not enough to judge",
        )
    latency = "p99 n/a" if p99_ms is None else f"p99 {p99_ms:.0f} ms"
    if p99_ms is not None and p99_ms > config.max_p99_ms:
        return Verdict("rollback", f"{latency} > max_p99_ms {config.max_p99_ms:g} ({errors_text} {window})")
    return Verdict(
        "promote",
        f"{errors_text} ≤ {config.max_error_rate:.1%}, {latency} ≤ {config.max_p99_ms:g} ms {window}",
    )
