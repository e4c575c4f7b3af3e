"""Validation of prediction requests (pure functions, no Flask, easy to unit-test)."""
from __future__ import annotations

import math
from typing import Any

N_FEATURES = 30  # sklearn's breast-cancer dataset, in its column order
MAX_INSTANCES = 10_000


class FeatureError(ValueError):
    """The request body is not a valid batch of instances."""


def parse_instances(payload: Any) -> list[list[float]]:
    """Check `{"instances": [[30 finite numbers], ...]}` and return the rows as floats."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise FeatureError('body must be a JSON object with an "instances" key')
    rows = payload["instances"]
    if not isinstance(rows, list) or not rows:
        raise FeatureError('"instances" must be a non-empty list of rows')
    if len(rows) > MAX_INSTANCES:
        raise FeatureError(f"at most {MAX_INSTANCES} instances per request")
    return [_parse_row(i, row) for i, row in enumerate(rows)]


def _parse_row(i: int, row: Any) -> list[float]:
    if not isinstance(row, list) or len(row) != N_FEATURES:
        raise FeatureError(f"instance {i}: expected a list of {N_FEATURES} numbers")
    out = []
    for j, value in enumerate(row):
        # bool is a subclass of int; true/false are not measurements.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FeatureError(f"instance {i}, feature {j}: not a number: {value!r}")
        if not math.isfinite(value):
            raise FeatureError(f"instance {i}, feature {j}: not finite")
        out.append(float(value))
    return out
