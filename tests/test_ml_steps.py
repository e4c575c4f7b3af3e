"""The evaluation gate and lineage inputs, as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import GateConfig
from workers.steps import StepError
from workers.steps.ml import judge, lineage_inputs, read_metrics


@pytest.mark.parametrize(
    ("gate", "metrics", "production", "passed", "verdict"),
    [
        (GateConfig(min=0.8), {"accuracy": 0.9}, None, True, "accuracy=0.9000 passes min"),
        (GateConfig(min=0.8), {"accuracy": 0.7}, None, False, "accuracy=0.7000 below min threshold 0.8000"),
        (
            GateConfig(min=0.8, max_drop_vs_production=0.02),
            {"accuracy": 0.95},
            {"accuracy": 0.96},
            True,
            "accuracy=0.9500 passes min, max_drop_vs_production",
        ),
        (
            GateConfig(min=0.8, max_drop_vs_production=0.0),
            {"accuracy": 0.95},
            {"accuracy": 0.96},
            False,
            "accuracy=0.9500 below max_drop_vs_production threshold 0.9600",
        ),
        (GateConfig(max_drop_vs_production=0.0), {"accuracy": 0.95}, None, True, "(no thresholds)"),
        (GateConfig(metric="f1", min=0.5), {"accuracy": 0.95}, None, False, "metric 'f1' is missing"),
        (
            GateConfig(metric="scores.auc", min=0.5),
            {"scores.auc": 0.6},
            None,
            True,
            "scores.auc=0.6000 passes",
        ),
    ],
)
def test_gate(
    gate: GateConfig,
    metrics: dict[str, float],
    production: dict[str, float] | None,
    passed: bool,
    verdict: str,
) -> None:
    result = judge(gate, metrics, production)
    assert result["passed"] is passed
    assert verdict in result["verdict"]


def test_metrics_are_flattened(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"accuracy": 0.9, "scores": {"auc": 0.8, "name": "x"}, "ok": true}')
    assert read_metrics(path) == {"accuracy": 0.9, "scores.auc": 0.8}
    (tmp_path / "m.yaml").write_text("loss: 0.1\n")
    assert read_metrics(tmp_path / "m.yaml") == {"loss": 0.1}
    with pytest.raises(StepError, match="was not produced"):
        read_metrics(tmp_path / "missing.json")


def test_lineage_inputs_from_dvc_lock(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text("""schema: '2.0'
stages:
  prepare:
    cmd: python -m src.train.prepare
    deps:
    - path: data/raw
      hash: md5
      md5: 6ffbaaad7b.dir
    params:
      params.yaml:
        prepare: {seed: 42}
    outs:
    - path: data/prepared
      md5: c78c9a1f50.dir
  train:
    cmd: python -m src.train.train
    params:
      params.yaml:
        train: {C: 1.0}
""")
    data, params = lineage_inputs(tmp_path)
    assert data == {
        "data/raw": "6ffbaaad7b.dir",
        "data/prepared": "c78c9a1f50.dir",
        "_stages": ["prepare", "train"],
    }
    assert params == {"prepare": {"seed": 42}, "train": {"C": 1.0}}
