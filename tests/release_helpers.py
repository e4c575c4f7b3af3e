"""Registered model versions with real pickled scikit-learn models, for the release tests."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from store.db import Database
from store.models import ModelVersion, Run

ROWS = load_breast_cancer().data[:4].tolist()


def constant_model(label: int) -> DummyClassifier:
    """A classifier that always answers ``label``: which release answered shows in the output."""
    return DummyClassifier(strategy="constant", constant=label).fit([[0.0] * 30, [1.0] * 30], [0, 1])


def real_model() -> object:
    X, y = load_breast_cancer(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


def register(
    db: Database, home: Path, name: str, version: int, model: object, commit: str = "c" * 40
) -> ModelVersion:
    """Pickle ``model`` into the registry and record version ``version`` (with the run behind it)."""
    artifact = home / "artifacts" / name / str(version) / "model.pkl"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(pickle.dumps(model))
    with db.session() as s:
        run = Run(
            repository="churn",
            ref="refs/heads/main",
            commit=commit,
            trigger="push",
            status="succeeded",
            dedupe_key=f"{name}:{version}:{commit}",
            model_version=version,
        )
        s.add(run)
        s.flush()
        mv = ModelVersion(
            name=name,
            version=version,
            run_id=run.id,
            repository="churn",
            commit=commit,
            ref="refs/heads/main",
            data_version={},
            params={},
            metrics={},
            artifact_path=str(artifact),
            sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
        )
        s.add(mv)
    return mv
