"""Stage `evaluate`: score models/model.pkl on data/prepared/test.csv -> metrics.json."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

TEST_CSV = Path("data/prepared/test.csv")
MODEL_PATH = Path("models/model.pkl")
METRICS_PATH = Path("metrics.json")


def score(model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float | int]:
    """Accuracy, F1 (positive class = 1) and test-set size, rounded for stable diffs."""
    y_pred = model.predict(X)
    return {
        "accuracy": round(float(accuracy_score(y, y_pred)), 4),
        "f1": round(float(f1_score(y, y_pred, zero_division=0)), 4),
        "n_test": int(len(y)),
    }


def main() -> None:
    data = np.loadtxt(TEST_CSV, delimiter=",", skiprows=1, ndmin=2)
    with MODEL_PATH.open("rb") as fh:  # our own freshly trained artifact
        model = pickle.load(fh)
    metrics = score(model, data[:, :-1], data[:, -1].astype(int))
    METRICS_PATH.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"evaluate: {metrics}")


if __name__ == "__main__":
    main()
