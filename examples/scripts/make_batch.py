"""Write a batch of "new" labelled data in the format prepare.py appends from data/raw.

    python scripts/make_batch.py N OUT.csv [--seed S] [--noise F] [--flip F]

Rows are sampled from sklearn's breast-cancer data, jittered with Gaussian noise of
`noise` x each feature's std (clipped at 0, as all features are non-negative).
`--flip` mislabels that fraction of rows: a "bad data" batch for demoing the gate.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def make_batch(n: int, seed: int = 0, noise: float = 0.05, flip: float = 0.0) -> np.ndarray:
    """Return `n` realistic rows: 30 features followed by the 0/1 target."""
    rng = np.random.default_rng(seed)
    X, y = load_breast_cancer(return_X_y=True)
    idx = rng.integers(0, len(X), size=n)
    features = np.clip(X[idx] + rng.normal(size=(n, X.shape[1])) * X.std(axis=0) * noise, 0.0, None)
    labels = np.where(rng.random(n) < flip, 1 - y[idx], y[idx])
    return np.column_stack([features, labels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of rows")
    parser.add_argument("out", type=Path, help="output CSV (e.g. data/raw/batch-001.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.05, help="noise, in feature stds")
    parser.add_argument("--flip", type=float, default=0.0, help="fraction of labels to flip")
    args = parser.parse_args()
    header = ",".join([*load_breast_cancer().feature_names, "target"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    batch = make_batch(args.n, args.seed, args.noise, args.flip)
    np.savetxt(args.out, batch, delimiter=",", header=header, comments="", fmt="%.6g")
    print(f"make_batch: wrote {len(batch)} rows to {args.out}")


if __name__ == "__main__":
    main()
