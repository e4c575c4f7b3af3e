"""Metrics files and lineage inputs, as plain functions (the gate's decision: test_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.steps import StepError
from workers.steps.ml import lineage_inputs, read_metrics


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
