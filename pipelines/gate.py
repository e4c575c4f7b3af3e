"""The evaluation gate's decision: pure, so every threshold and comparison is a table test.

The worker gathers the numbers (the candidate's metrics file, production evaluated on the same
held-out data); :func:`judge` compares them and says why, in a sentence a human can act on.
"""

from __future__ import annotations

from typing import Any

from pipelines.project import GateConfig


def _describe(check: dict[str, Any], against: str) -> str:
    metric, value, passed = check["metric"], check["value"], check["passed"]
    if value is None:
        return f"{metric} is missing from the metrics file"
    if check["check"] == "min":
        return f"{metric}={value:.4f} {'≥' if passed else '<'} min {check['threshold']:.4f}"
    if check["check"] == "max":
        return f"{metric}={value:.4f} {'≤' if passed else '>'} max {check['threshold']:.4f}"
    text = f"{metric} {value:.4f} vs {against} {check['production']:.4f} (Δ {check['delta']:+.4f}"
    return text + (
        f", allowed drop {check['max_drop']:.4f})"
        if passed
        else f") drops more than the allowed {check['max_drop']:.4f}"
    )


def judge(
    gate: GateConfig,
    candidate: dict[str, float],
    production: dict[str, float] | None = None,
    *,
    against: str = "production",
) -> dict[str, Any]:
    """Decide the gate; returns every number compared, each check, and a one-line verdict.

    :param candidate: the candidate's metrics (flattened ``a.b`` keys).
    :param production: production's metrics on the same data; ``None`` (nothing in production,
        or no comparison configured): the absolute thresholds alone decide.
    :param against: how the verdict names the production numbers.
    """
    checks: list[dict[str, Any]] = []
    for metric, bound in gate.bounds():
        value = candidate.get(metric)
        for kind, threshold in (("min", bound.min), ("max", bound.max)):
            if threshold is None:
                continue
            ok = value is not None and (value >= threshold if kind == "min" else value <= threshold)
            checks.append(
                {"check": kind, "metric": metric, "value": value, "threshold": threshold, "passed": ok}
            )
    value = candidate.get(gate.metric)
    prod_value = (production or {}).get(gate.metric)
    if gate.max_drop_vs_production is not None and prod_value is not None:
        floor = prod_value - gate.max_drop_vs_production
        checks.append(
            {
                "check": "max_drop_vs_production",
                "metric": gate.metric,
                "value": value,
                "production": prod_value,
                "delta": None if value is None else value - prod_value,
                "max_drop": gate.max_drop_vs_production,
                "threshold": floor,
                "passed": value is not None and value >= floor,
            }
        )
    if value is None and not checks:  # nothing else to check: at least the metric must be there
        checks.append(
            {"check": "present", "metric": gate.metric, "value": None, "threshold": None, "passed": False}
        )
    failed = [c for c in checks if not c["passed"]]
    shown = failed or checks
    verdict = ("failed: " if failed else "passed: ") + (
        "; ".join(_describe(c, against) for c in shown) or "no thresholds configured"
    )
    return {
        "passed": not failed,
        "metric": gate.metric,
        "value": value,
        "production_value": prod_value,
        "checks": checks,
        "verdict": verdict,
    }
