"""Unit tests for request validation in app/features.py."""
from __future__ import annotations

from typing import Any

import pytest

from app.features import N_FEATURES, FeatureError, parse_instances

ROW = [1.5] * N_FEATURES


def test_valid_batch_is_returned_as_floats() -> None:
    rows = parse_instances({"instances": [ROW, [1] * N_FEATURES]})
    assert rows == [ROW, [1.0] * N_FEATURES]
    assert all(isinstance(v, float) for v in rows[1])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [ROW],
        {"rows": [ROW]},
        {"instances": []},
        {"instances": ROW},
        {"instances": [ROW[:-1]]},
        {"instances": [ROW + [0.0]]},
        {"instances": [ROW[:-1] + ["1.0"]]},
        {"instances": [ROW[:-1] + [True]]},
        {"instances": [ROW[:-1] + [None]]},
        {"instances": [ROW[:-1] + [float("nan")]]},
        {"instances": [ROW[:-1] + [float("inf")]]},
    ],
)
def test_malformed_payloads_are_rejected(payload: Any) -> None:
    with pytest.raises(FeatureError):
        parse_instances(payload)
