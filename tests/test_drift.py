"""Drift and volume triggers: live traffic through the gateway to a real model server, compared
with the serving model's training profile; landed rows counted since its dataset version. The
checks run as beat runs them; their deliveries become runs through intake, on SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from flask.testing import FlaskClient
from sklearn.datasets import load_breast_cancer

from config.settings import Settings
from pipelines import drift as drifts
from pipelines.config import DataLakeEntry, RepoConfig
from pipelines.profile import profile
from pipelines.project import DriftLimits, DriftTrigger, VolumeTrigger
from pipelines.triggers import new_rows, volume_due
from service import create_app
from service.gateway import Gateway
from store import datasets, outcomes, triggers
from store.db import Database
from store.models import Delivery, Deployment, ModelVersion, Run
from tests.conftest import ROOT, Project, make_settings
from tests.release_helpers import real_model
from tests.test_triggers import run_of
from workers import serving
from workers.intake import prepare_run
from workers.projects import mirror
from workers.tables import read_table
from workers.triggers import check, check_drift, check_volume
from workers.watcher import FolderWatcher

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
X, Y = load_breast_cancer(return_X_y=True)
BASE = profile(read_table(ROOT / "examples/data/raw/base.csv"))
DRIFT = DriftTrigger(threshold=0.2, min_samples=300, sample_rate=1.0, cooldown=6 * 3600.0, window=400)


def rows(n: int, seed: int, shift: dict[int, float] | None = None) -> list[list[float]]:
    """``n`` real rows (features only); ``shift`` scales some columns, as a changed world would."""
    picked = X[np.random.default_rng(seed).integers(0, len(X), n)].copy()
    for column, factor in (shift or {}).items():
        picked[:, column] *= factor
    return picked.tolist()


# -- the decisions, pure ---------------------------------------------------------------------


def test_the_label_column_is_configured_or_the_one_the_instances_lack() -> None:
    columns = list(BASE["columns"])
    assert drifts.label_column(BASE, [[0.0] * 30], None) == "target" == columns[-1]
    assert drifts.label_column(BASE, [{"mean radius": 1.0}], None) is None  # many columns absent
    every = {c: 1.0 for c in columns if c != "target"}
    assert drifts.label_column(BASE, [every], None) == "target"
    assert drifts.label_column(BASE, [[0.0] * 31], None) is None
    assert drifts.label_column(BASE, [[0.0] * 30], "mean radius") == "mean radius"
    assert drifts.label_column(BASE, [[0.0] * 30], "nope") is None


def test_drift_checks_name_each_drifted_feature_and_its_number() -> None:
    labels = [str(v) for v in Y[np.random.default_rng(1).integers(0, len(X), 400)]]
    same = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window(rows(400, 1), labels), 3)
    assert same.reason is None and same.note.startswith("no drift over the last 400 sampled inputs")
    assert len(same.statistics) == 31  # 30 features and the predicted label
    shifted = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window(rows(400, 1, {0: 1.5}), labels), 3)
    assert [name for name, _ in shifted.drifted] == ["mean radius"] and shifted.predicted is None
    psi = shifted.drifted[0][1]
    assert shifted.reason == (
        f"v3: feature `mean radius` drifted, PSI {psi:.2f} > 0.2 over the last 400 sampled inputs"
    )
    many = drifts.check(
        DRIFT,
        DriftLimits(),
        BASE,
        drifts.Window(rows(400, 1, {0: 1.5, 1: 1.6, 2: 1.5, 3: 2.0, 20: 1.5}), labels),
        3,
    )
    assert (
        len(many.drifted) >= 4 and many.reason is not None and " more drifted, PSI > 0.2 over" in many.reason
    )
    assert many.reason.count("(PSI ") == drifts.NAMED
    # the predicted labels: always "0" against a training set of 37% zeros
    predicted = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window(rows(400, 1), ["0"] * 400), 3)
    assert predicted.drifted == () and predicted.predicted is not None
    assert predicted.reason is not None and predicted.reason.startswith(
        "v3: predicted `target` drifted, PSI "
    )
    # too few, or instances of another shape: no verdict
    few = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window(rows(10, 1), ["0"] * 10), 3)
    assert few.reason is None and few.note == "10 of the 300 sampled inputs needed"
    odd = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window([[1.0, 2.0]] * 400, ["0"] * 400), 3)
    assert odd.reason is None and "do not match the training data's columns" in odd.note
    # object instances are matched by name
    named = [dict(zip(list(BASE["columns"])[:30], r, strict=True)) for r in rows(400, 1, {0: 1.5})]
    by_name = drifts.check(DRIFT, DriftLimits(), BASE, drifts.Window(named, labels), 3)
    assert [name for name, _ in by_name.drifted] == ["mean radius"]


def entry(path: str, sha: str, rows: int | None) -> dict[str, Any]:
    return {"path": path, "sha256": sha, "size": 1, "rows": rows}


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        ([], [entry("a.csv", "1", 100)], 100),
        ([entry("a.csv", "1", 100)], [entry("a.csv", "1", 100)], 0),
        ([entry("a.csv", "1", 100)], [entry("a.csv", "2", 130), entry("b.csv", "3", 7)], 37),
        ([entry("a.csv", "1", 100)], [entry("a.csv", "2", 60)], 0),  # rewritten shorter
        ([entry("a.csv", "1", 100)], [entry("b.bin", "2", None)], 0),  # not a table
    ],
)
def test_new_rows_count_added_files_and_what_replaced_ones_grew(
    before: list[dict[str, Any]], now: list[dict[str, Any]], expected: int
) -> None:
    assert new_rows(before, now) == expected


def test_volume_waits_below_the_minimum() -> None:
    volume = VolumeTrigger(min_new_rows=1000)
    assert volume_due(volume, 999, 3, 1, 4) is None
    assert (
        volume_due(volume, 1200, 3, 1, 4)
        == "1,200 new rows landed since v3's dataset v1 (dataset v4 now) ≥ 1,000"
    )


# -- live traffic through the gateway, against a real model server ---------------------------


@dataclass
class Live:
    settings: Settings
    db: Database
    client: FlaskClient
    gateway: Gateway
    release: int

    @property
    def repo(self) -> RepoConfig:
        return self.settings.repositories[0]

    def send(self, instances: list[list[float]]) -> None:
        """Predictions through ``/serve/churn/predict``, a hundred instances a request; then the
        gateway's flush (about once a second by itself) stores the samples."""
        for start in range(0, len(instances), 100):
            answer = self.client.post(
                "/serve/churn/predict", json={"instances": instances[start : start + 100]}
            )
            assert answer.status_code == 200, answer.text
        self.gateway.recorder.flush()


def serve(db: Database, settings: Settings, run_id: int | None = None) -> tuple[ModelVersion, Path]:
    """Register a real scikit-learn model as churn v1, with base.csv's profile."""
    artifact = settings.home / "artifacts/churn/1/model.pkl"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(pickle.dumps(real_model()))
    with db.session() as s:
        if run_id is None:
            run = Run(repository="churn", trigger="push", status="succeeded", dedupe_key="first")
            s.add(run)
            s.flush()
            run_id = run.id
        mv = ModelVersion(
            name="churn",
            version=1,
            run_id=run_id,
            repository="churn",
            commit="c" * 40,
            data_version={},
            params={},
            metrics={},
            artifact_path=str(artifact),
            sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
            dataset={"repository": "churn", "version": 0},
            profile=BASE,
        )
        s.add(mv)
    return mv, artifact


@pytest.fixture
def live(tmp_path: Path, project: Project, db: Database) -> Iterator[Live]:
    project.push()
    settings = make_settings(tmp_path, (project.repo_config(),), db_url=db.url)
    mv, artifact = serve(db, settings)
    server = serving.start(
        cwd=ROOT, command=None, model_path=artifact, sha256=mv.sha256, log_file=tmp_path / "v1.log"
    )
    try:
        with db.session() as s:
            dep = Deployment(
                model_name="churn",
                version=1,
                run_id=mv.run_id,
                target="local",
                url=server.url,
                pid=server.pid,
                status="active",
                traffic_percent=100,
            )
            s.add(dep)
            s.flush()
            release = dep.id
        app = create_app({"settings": settings, "TESTING": True})
        gateway: Gateway = app.extensions["gateway"]
        try:
            yield Live(settings, db, app.test_client(), gateway, release)
        finally:
            gateway.close()
            app.extensions["loopline"].db.dispose()
    finally:
        serving.stop(server.pid)


def test_shifted_traffic_starts_one_retrain_per_drift_episode(live: Live, project: Project) -> None:
    db, repo = live.db, live.repo
    config = yaml.safe_load((project.work / "loopline.yml").read_text())
    config["triggers"] = {"drift": {"min_samples": 300, "sample_rate": 1.0, "window": 400}}
    project.commit({"loopline.yml": yaml.safe_dump(config)})
    project.push()
    mirror(live.settings, repo).update()
    assert check(live.settings, db, T0) == []  # beat's pass: reads triggers.drift, sets the rate
    assert outcomes.rates(db) == {"churn": 1.0}
    live.gateway.outcomes.rates = outcomes.rates(db)  # the gateway rereads them every few seconds
    live.send(rows(400, 7))  # the world as the model learned it
    assert check(live.settings, db, T0 + timedelta(seconds=15)) == []
    state = triggers.state(db, "churn", "drift")
    assert state is not None and (state.reason or "").startswith("no drift over the last 400 sampled inputs")

    live.send(rows(400, 8, {0: 1.5}))  # mean radius grew by half
    [notice] = check(live.settings, db, T0 + timedelta(minutes=1))
    assert notice.detail["trigger"] == "drift"
    run = run_of(db, prepare_run(live.settings, db, [notice.detail["event_id"]]).run_id)
    assert (run.trigger, run.ref, run.dataset_version) == ("drift", "refs/heads/main", 0)
    assert run.reason.startswith("v1: feature `mean radius` drifted, PSI ")
    assert run.reason.endswith(" > 0.2 over the last 400 sampled inputs")
    assert run.plan[:3] == ["environment", "unit_tests", "retrain"]
    # the same episode again: under way, then cooling down; neither starts a second run
    live.send(rows(100, 9, {0: 1.5}))
    assert check_drift(db, repo, "churn", DRIFT, DriftLimits(), T0 + timedelta(minutes=2)) is None
    assert "(not fired: run " in (triggers.state(db, "churn", "drift").reason or "")
    with db.session() as s:
        found = s.get(Run, run.id)
        assert found is not None
        found.status = "succeeded"
    assert check_drift(db, repo, "churn", DRIFT, DriftLimits(), T0 + timedelta(hours=1)) is None
    assert "(not fired: cooling down since" in (triggers.state(db, "churn", "drift").reason or "")
    with db.session() as s:
        assert s.query(Run).filter(Run.trigger == "drift").count() == 1
    # after the cooldown, the drift that is still there is a new episode
    assert check_drift(db, repo, "churn", DRIFT, DriftLimits(), T0 + timedelta(hours=7)) is not None


# -- volume: landed rows since the serving model's dataset version -----------------------------


def test_volume_retrains_once_enough_rows_landed(tmp_path: Path, project: Project, db: Database) -> None:
    config = yaml.safe_load((project.work / "loopline.yml").read_text())
    config["triggers"] = {"volume": {"min_new_rows": 300}}
    project.commit({"loopline.yml": yaml.safe_dump(config)})
    project.push()
    folder = tmp_path / "lake"
    folder.mkdir()
    settings = make_settings(
        tmp_path, (project.repo_config(data_lake=(DataLakeEntry(folder=str(folder)),)),), db_url=db.url
    )
    repo = settings.repositories[0]
    serve(db, settings)
    with db.session() as s:
        run_id = s.query(ModelVersion.run_id).scalar()
        s.add(Deployment(model_name="churn", version=1, run_id=run_id, target="local", status="active"))
    watcher = FolderWatcher(settings, db, settle=0)
    volume = VolumeTrigger(min_new_rows=300)

    def drop(name: str, n: int, seed: int) -> int | None:
        picked = np.random.default_rng(seed).integers(0, len(X), n)
        table = np.column_stack([X[picked], Y[picked]])
        header = ",".join(BASE["columns"])
        np.savetxt(folder / name, table, delimiter=",", header=header, comments="", fmt="%.6g")
        watcher.scan_once(now=seed * 10)
        watcher.scan_once(now=seed * 10 + 1)
        with db.session() as s:
            pending = [d.id for d in s.query(Delivery).filter(Delivery.status == "pending")]
        assert pending
        return prepare_run(settings, db, pending).run_id

    assert drop("a.csv", 150, 1) is None  # landed as dataset v1; no run of its own
    assert datasets.current_number(db, "churn") == 1
    assert check_volume(db, repo, "churn", volume, T0) is None
    assert triggers.state(db, "churn", "volume").reason == "150 of 300 new rows since v1's dataset"
    assert drop("b.csv", 100, 2) is None
    assert check_volume(db, repo, "churn", volume, T0) is None  # 250: still waiting
    assert drop("c.csv", 60, 3) is None  # 310 rows since v1's dataset v0
    event = check_volume(db, repo, "churn", volume, T0 + timedelta(minutes=1))
    assert event is not None
    assert check_volume(db, repo, "churn", volume, T0 + timedelta(minutes=2)) is None  # one run
    run = run_of(db, prepare_run(settings, db, [event]).run_id)
    assert (run.trigger, run.dataset_version) == ("volume", 3)
    assert run.reason == "310 new rows landed since v1's dataset v0 (dataset v3 now) ≥ 300"
    landed = sorted(p.name for p in (Path(run.workspace or "") / "data/raw").iterdir())
    assert landed == ["a.csv", "b.csv", "base.csv", "c.csv"]  # the run trains on dataset v3
