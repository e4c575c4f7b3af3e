"""Stage `prepare`: every CSV in data/raw -> train/test split in data/prepared.

data/raw holds the committed base dataset (base.csv: scikit-learn's breast-cancer data, written
by `python -m src.train.prepare --write-base`) and every batch Loopline lands there. Prepared
CSVs have a header row and the label `target` as the last column.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

TARGET = "target"
FEATURES: list[str] = [str(name) for name in load_breast_cancer().feature_names]
COLUMNS: list[str] = [*FEATURES, TARGET]
RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/prepared")


def load_base() -> np.ndarray:
    """The dataset shipped with scikit-learn: 569 rows x (30 features + target)."""
    X, y = load_breast_cancer(return_X_y=True)
    return np.column_stack([X, y])


def read_batch(path: Path) -> np.ndarray:
    """Read one new-data CSV (header row, columns in any order) into COLUMNS order."""
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if set(header) != set(COLUMNS):
        missing = sorted(set(COLUMNS) - set(header))
        extra = sorted(set(header) - set(COLUMNS))
        raise ValueError(f"{path}: column mismatch (missing={missing}, extra={extra})")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    data = data[:, [header.index(c) for c in COLUMNS]]
    if not np.isin(data[:, -1], (0, 1)).all():
        raise ValueError(f"{path}: {TARGET} must be 0 or 1")
    return data


def read_raw(raw_dir: Path) -> list[np.ndarray]:
    """All `*.csv` batches in `raw_dir`, sorted by name for determinism."""
    return [read_batch(path) for path in sorted(raw_dir.glob("*.csv"))]


def split(data: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test split."""
    train, test = train_test_split(data, test_size=test_size, random_state=seed, stratify=data[:, -1])
    return train, test


def write_csv(path: Path, data: np.ndarray) -> None:
    """Write rows with a header line, compactly but without losing precision."""
    np.savetxt(path, data, delimiter=",", header=",".join(COLUMNS), comments="", fmt="%.10g")


def main() -> None:
    if sys.argv[1:] == ["--write-base"]:
        write_csv(RAW_DIR / "base.csv", load_base())
        return
    params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
    batches = read_raw(RAW_DIR)
    if not batches:
        raise SystemExit(f"prepare: no CSV files in {RAW_DIR}")
    data = np.vstack(batches)
    train, test = split(data, float(params["test_size"]), int(params["seed"]))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_csv(OUT_DIR / "train.csv", train)
    write_csv(OUT_DIR / "test.csv", test)
    print(f"prepare: {len(data)} rows from {len(batches)} file(s) -> train={len(train)} test={len(test)}")


if __name__ == "__main__":
    main()
