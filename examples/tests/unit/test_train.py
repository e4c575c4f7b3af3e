"""Smoke tests for the `train` and `evaluate` stages (and the batch generator) on a few rows."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from src.train.evaluate import score
from src.train.prepare import load_base, split, write_csv
from src.train.train import fit, load_xy


def test_fit_and_score_on_small_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = load_base()[rng.choice(569, size=120, replace=False)]
    train, test = split(small, test_size=0.25, seed=0)
    write_csv(tmp_path / "train.csv", train)
    model = fit(*load_xy(tmp_path / "train.csv"), C=1.0, max_iter=200)
    metrics = score(model, test[:, :-1], test[:, -1].astype(int))
    assert set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss", "n_test"}
    assert metrics["n_test"] == 30
    assert metrics["accuracy"] > 0.8


def test_model_predicts_plain_lists() -> None:
    base = load_base()[:100]
    model = fit(base[:, :-1], base[:, -1].astype(int), C=1.0, max_iter=200)
    assert set(model.predict(base[:3, :-1].tolist())) <= {0, 1}


def test_make_batch_rows_look_real() -> None:
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_batch.py"
    spec = importlib.util.spec_from_file_location("make_batch", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    batch = module.make_batch(50, seed=1, flip=0.0)
    assert batch.shape == (50, 31)
    assert (batch[:, :-1] >= 0).all() and set(np.unique(batch[:, -1])) <= {0.0, 1.0}
