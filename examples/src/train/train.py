"""Stage `train`: fit StandardScaler + LogisticRegression on data/prepared/train.csv."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

TRAIN_CSV = Path("data/prepared/train.csv")
MODEL_PATH = Path("models/model.pkl")


def load_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from a prepared CSV (header row, label in the last column)."""
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return data[:, :-1], data[:, -1].astype(int)


def fit(X: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> Pipeline:
    """Standardised features into an L2-regularised logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    return model.fit(X, y)


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["train"]
    model = fit(*load_xy(TRAIN_CSV), C=float(params["C"]), max_iter=int(params["max_iter"]))
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    with MODEL_PATH.open("wb") as fh:
        pickle.dump(model, fh)
    print(f"train: wrote {MODEL_PATH} (C={params['C']}, max_iter={params['max_iter']})")


if __name__ == "__main__":
    main()
