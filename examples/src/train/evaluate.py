"""Stage `evaluate`: score models/model.pkl on data/prepared/test.csv -> metrics.json.

Loopline's gate runs this same command on the production model, to compare both on this
run's held-out data: LOOPLINE_MODEL_PATH names the model to score (a copy whose sha256 Loopline
checked against its registry) and LOOPLINE_METRICS_OUT where to write its metrics.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

TEST_CSV = Path("data/prepared/test.csv")
MODEL_PATH = Path("models/model.pkl")
METRICS_PATH = Path("metrics.json")


def score(model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float | int]:
    """Accuracy, F1 (positive class = 1), ROC AUC, log loss and test-set size, rounded for
    stable diffs."""
    y_pred = model.predict(X)
    proba = model.predict_proba(X)[:, 1]
    return {
        "accuracy": round(float(accuracy_score(y, y_pred)), 4),
        "f1": round(float(f1_score(y, y_pred, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y, proba)), 4),
        "log_loss": round(float(log_loss(y, proba, labels=[0, 1])), 4),
        "n_test": int(len(y)),
    }


def main() -> None:
    model_path = Path(os.environ.get("LOOPLINE_MODEL_PATH", MODEL_PATH))
    metrics_path = Path(os.environ.get("LOOPLINE_METRICS_OUT", METRICS_PATH))
    data = np.loadtxt(TEST_CSV, delimiter=",", skiprows=1, ndmin=2)
    with model_path.open("rb") as fh:  # our own artifact, or the one Loopline verified
        model = pickle.load(fh)
    metrics = score(model, data[:, :-1], data[:, -1].astype(int))
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"evaluate: {metrics}")


if __name__ == "__main__":
    main()
