"""Metrics files and lineage inputs, as plain functions (the gate's decision: test_gate.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipelines.project import parse_project_config
from workers.steps import StepError
from workers.steps.gate import ArtifactMismatch, compare_command, verified_copy
from workers.steps.ml import lineage_inputs, read_metrics
from workers.steps.release import ModelRef


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


@pytest.mark.parametrize(
    ("dvc_yaml", "config", "expected"),
    [
        (  # the sample project's shape: a `metrics` entry with options
            "stages:\n  evaluate:\n    cmd: python -m src.eval\n"
            "    metrics:\n    - metrics.json:\n        cache: false\n",
            {},
            ("python -m src.eval", "."),
        ),
        ("stages:\n  ev:\n    cmd: [python ev.py]\n    outs: [metrics.json]\n", {}, ("python ev.py", ".")),
        (
            "stages:\n  ev:\n    cmd: python ev.py\n    wdir: ml\n    metrics: [out/m.json]\n",
            {"model": {"metrics": "ml/out/m.json"}},
            ("python ev.py", "ml"),
        ),
        (
            "stages:\n  ev:\n    cmd: [a, b]\n    metrics: [metrics.json]\n",
            {},
            None,
        ),  # two commands: ambiguous
        ("stages:\n  train:\n    cmd: python t.py\n    outs: [model.pkl]\n", {}, None),
        (None, {}, None),
        (None, {"gate": {"compare": "python score.py"}}, ("python score.py", ".")),
        (  # configured wins over the DVC stage
            "stages:\n  evaluate:\n    cmd: python -m src.eval\n    metrics: [metrics.json]\n",
            {"gate": {"compare": "python score.py"}},
            ("python score.py", "."),
        ),
    ],
)
def test_compare_command(
    tmp_path: Path, dvc_yaml: str | None, config: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    if dvc_yaml is not None:
        (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    found = compare_command(parse_project_config(config), tmp_path)
    assert found == (None if expected is None else (expected[0], tmp_path / expected[1]))


def test_only_a_verified_copy_of_the_artifact_is_handed_out(tmp_path: Path) -> None:
    artifact = tmp_path / "registry" / "model.pkl"
    artifact.parent.mkdir()
    artifact.write_bytes(b"model bytes")
    ref = ModelRef("churn", 4, artifact, hashlib.sha256(b"model bytes").hexdigest(), {})
    (tmp_path / "out").mkdir()
    copy = verified_copy(ref, tmp_path / "out")
    assert copy != artifact and copy.read_bytes() == b"model bytes"
    artifact.write_bytes(b"tampered")
    with pytest.raises(ArtifactMismatch, match=r"not the registered .*; refusing to load it"):
        verified_copy(ref, tmp_path / "out")
    artifact.unlink()
    with pytest.raises(ArtifactMismatch, match="cannot be read"):
        verified_copy(ref, tmp_path / "out")
