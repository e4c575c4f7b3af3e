"""The data ledger end to end without Celery: S3 objects (moto's real server) land once in the
object storage and make numbered dataset versions; every run trains on one (real ``dvc repro``),
a retry on its original one, removals make a version without the object, lineage names the
version and ``reproduce`` rebuilds a model byte for byte. Plus ``validate_data`` against the
serving model's training-data profile."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from pipelines.config import DataLakeEntry
from pipelines.profile import profile
from service import create_app
from service.state import loopline
from store import runs
from store.db import Database
from store.models import Delivery, Deployment, ModelVersion, Run
from tests import test_fetch
from tests.conftest import Project, make_settings
from tests.test_fetch import Lake, batch_csv, s3_entry, s3_record
from tests.test_intake import deliver
from workers import runner
from workers.intake import prepare_retry, prepare_run
from workers.reproduce import reproduce
from workers.tables import read_table
from workers.watcher import FolderWatcher

TRAIN = ("retrain", "evaluate", "register")
# the moto server, its bucket and the app around a project whose data lake is that bucket
moto_url, bucket, lake_for = test_fetch.moto_url, test_fetch.bucket, test_fetch.lake_for


def _pending(db: Database) -> list[str]:
    with db.session() as s:
        return list(
            s.scalars(select(Delivery.id).where(Delivery.run_id.is_(None), Delivery.status == "pending"))
        )


def _run(db: Database, run_id: int) -> Run:
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        _ = run.stages
        return run


def _push(lake: Lake, project: Project, files: dict[str, str], branch: str = "main") -> int:
    before = project.head()
    after = project.commit(files, f"change {sorted(files)}")
    project.push(branch)
    prepared = prepare_run(
        lake.settings, lake.db, [deliver(lake.db, project, before, after, f"refs/heads/{branch}")]
    )
    assert prepared.run_id is not None
    return prepared.run_id


def _drop(lake: Lake, bucket: Any, key: str, body: bytes | None, seq: str) -> int | None:
    """An S3 event for ``incoming/<key>`` (``body`` None: its removal), then intake."""
    put = (
        bucket.put_object(Bucket=bucket.name, Key=f"incoming/{key}", Body=body) if body is not None else None
    )
    lake.post("s3", {"Records": [s3_record(bucket.name, f"incoming/{key}", put, len(body or b""), seq)]})
    return prepare_run(lake.settings, lake.db, _pending(lake.db)).run_id


def _train(lake: Lake, run_id: int) -> dict[str, Any]:
    for stage in TRAIN:
        assert runner.execute(lake.settings, lake.db, run_id, stage) == "succeeded", _run(
            lake.db, run_id
        ).stages
    version = _run(lake.db, run_id).model_version
    return lake.client.get(f"/api/models/churn/versions/{version}").json


def _files(model: dict[str, Any]) -> dict[str, Any]:
    return {f["path"]: f for f in model["dataset"]["files"]}


def test_data_stays_landed_and_models_are_reproducible(
    tmp_path: Path, bucket: Any, moto_url: str, lake_for: Any, project: Project
) -> None:
    lake = lake_for(s3_entry(bucket, moto_url))  # pushes the project
    db = lake.db
    first = prepare_run(lake.settings, db, [deliver(db, project, "0" * 40, project.head())]).run_id
    assert first is not None and _run(db, first).dataset_version == 0
    before_a = _train(lake, first)
    assert list(_files(before_a)) == ["base.csv"] and _files(before_a)["base.csv"]["source"] == "commit"

    a, b = batch_csv(tmp_path, rows=80, seed=11), batch_csv(tmp_path, rows=80, seed=12)
    run_a = _drop(lake, bucket, "a.csv", a, "10")
    assert run_a is not None and _run(db, run_a).dataset_version == 1
    assert runner.execute(lake.settings, db, run_a, "validate_data") == "succeeded"
    feature = _push(lake, project, {"src/train/note.py": "# a change on a branch\n"}, branch="feature")
    assert _run(db, feature).dataset_version == 1
    runs.cancel(db, feature, by="test")
    run_b = _drop(lake, bucket, "b.csv", b, "11")
    assert run_b is not None and _run(db, run_b).dataset_version == 2
    assert (Path(_run(db, run_b).workspace) / "data/raw/a.csv").read_bytes() == a  # the earlier drop stays

    # A retry after the newer drop trains on exactly its original version.
    again = runs.retry(db, feature, by="test")
    prepare_retry(lake.settings, db, again.id)
    retried = _run(db, again.id)
    data = Path(retried.workspace) / "data/raw"
    assert retried.dataset_version == 1 and sorted(p.name for p in data.iterdir()) == ["a.csv", "base.csv"]

    # Training code pushed after both drops: the model learns from the base data, A and B.
    code = _push(lake, project, {"params.yaml": (project.work / "params.yaml").read_text() + "# tuned\n"})
    model = _train(lake, code)
    files = _files(model)
    assert model["dataset"]["version"] == 2 and sorted(files) == ["a.csv", "b.csv", "base.csv"]
    assert (
        files["a.csv"]["rows"] == 80
        and files["a.csv"]["source"]["url"] == f"s3://{bucket.name}/incoming/a.csv"
    )
    assert model["sha256"] != before_a["sha256"]
    chain = lake.client.get(f"/api/models/churn/versions/{model['version']}").json["lineage"]
    assert chain["data"]["dataset"]["manifest_sha256"] == model["dataset"]["manifest_sha256"]
    assert chain["run"]["dataset_version"] == 2

    # A removal in the lake: a version without the object, and no run; the next retrain lacks it.
    assert _drop(lake, bucket, "a.csv", None, "12") is None
    listing = lake.client.get("/api/datasets/churn").json
    assert listing["current"] == 3 and listing["versions"][0]["trigger"]["removed"] == ["a.csv"]
    diff = lake.client.get("/api/datasets/churn/versions/2/diff/3").json
    assert [f["path"] for f in diff["removed"]] == ["a.csv"] and diff["rows"] == {"from": 160, "to": 80}
    shown = lake.client.get("/api/datasets/churn/versions/2").json
    assert [m["version"] for m in shown["models"]] == [model["version"]] and shown["profile"][
        "rows"
    ] == 569 + 160
    later = _train(lake, _push(lake, project, {"src/train/note.py": "# another change\n"}))
    assert later["dataset"]["version"] == 3 and sorted(_files(later)) == ["b.csv", "base.csv"]
    assert later["sha256"] not in (model["sha256"], before_a["sha256"])

    # Rebuilt from its lineage alone, in a fresh worktree with an empty DVC cache.
    report = reproduce(lake.settings, db, "churn", model["version"])
    assert report["reproduced"], report
    assert report["sha256"] == model["sha256"] and report["metrics"] == model["metrics"]
    assert report["log"].startswith("logs/reproductions/churn-") and "log_file" not in report


@pytest.fixture
def drops(tmp_path: Path, project: Project, db: Database) -> Any:
    """A project whose serving model learned from the committed base.csv, and a drop folder."""
    folder = tmp_path / "lake"
    folder.mkdir()
    settings = make_settings(
        tmp_path, (project.repo_config(data_lake=(DataLakeEntry(folder=str(folder)),)),), db_url=db.url
    )
    project.push()
    base = read_table(project.work / "data/raw/base.csv")
    with db.session() as s:
        run = Run(
            repository="churn", ref="refs/heads/main", commit=project.head(), trigger="push", dedupe_key="x"
        )
        s.add(run)
        s.flush()
        s.add(
            ModelVersion(
                name="churn",
                version=1,
                run_id=run.id,
                repository="churn",
                commit=project.head(),
                data_version={},
                params={},
                metrics={},
                artifact_path="-",
                sha256="0" * 64,
                profile=profile(base),
            )
        )
        s.add(Deployment(model_name="churn", version=1, run_id=run.id, target="local", status="active"))
    watcher = FolderWatcher(settings, db, settle=0)

    def drop(name: str, body: bytes) -> Run:
        (folder / name).write_bytes(body)
        watcher.scan_once(now=0)
        watcher.scan_once(now=1)
        run_id = prepare_run(settings, db, _pending(db)).run_id
        assert run_id is not None
        runner.execute(settings, db, run_id, "validate_data")
        return _run(db, run_id)

    return drop


def _edit(body: bytes, change: Any) -> bytes:
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    out = io.StringIO()
    fields = list(change(rows) or rows[0])
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_validate_data_against_the_serving_models_profile(tmp_path: Path, drops: Any) -> None:
    clean = drops("clean.csv", batch_csv(tmp_path, rows=120, seed=21))
    assert clean.status == "running" and clean.stages[0].status == "succeeded", clean.stages[0].detail
    report = clean.stages[0].detail
    assert report["reference"] == {"source": "churn v1 (serving)", "rows": 569}
    assert report["files"][0]["drifted"] == [] and len(report["files"][0]["drift"]) == 31

    def shift(rows: list[dict[str, str]]) -> None:
        for row in rows:
            row["mean texture"] = str(float(row["mean texture"]) * 1.6)

    drifted = drops("drifted.csv", _edit(batch_csv(tmp_path, rows=120, seed=22), shift))
    assert drifted.status == "failed"
    assert drifted.reason.startswith("stage validate_data failed: drifted.csv: column 'mean texture'"), (
        drifted.reason
    )
    [file] = drifted.stages[0].detail["files"]
    assert (
        file["drifted"] == ["mean texture"]
        and file["drift"]["mean texture"] > 0.2
        and file["statistics"]["mean texture"]["ks_pvalue"] < 1e-6
    )

    def without(rows: list[dict[str, str]]) -> list[str]:
        return [c for c in rows[0] if c != "mean area"]

    missing = drops("missing.csv", _edit(batch_csv(tmp_path, rows=50, seed=23), without))
    assert missing.status == "failed"
    assert missing.reason == "stage validate_data failed: missing.csv: column 'mean area' is missing"


def test_datasets_api_answers_unknown_and_bad_input(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, (), db_url=db.url)
    client: FlaskClient = create_app({"settings": settings, "TESTING": True}).test_client()
    try:
        for path in (
            "/api/datasets/nope",
            "/api/datasets/nope/versions/1",
            "/api/datasets/nope/versions/1/diff/2",
        ):
            answer = client.get(path)
            assert answer.status_code == 404 and answer.json["error"] == "not_found"
        assert client.get("/api/datasets/x/versions/-1").status_code == 404
    finally:
        with client.application.app_context():
            loopline().db.dispose()


def test_data_validate_is_configured_in_loopline_yml() -> None:
    from pipelines.config import ConfigError
    from pipelines.project import parse_project_config

    config = parse_project_config({"data": {"validate": {"max_missing": 0.2, "drift": {"psi": 0.5}}}})
    limits = config.data_validate
    assert (limits.max_missing, limits.drift.psi, limits.drift.ks_pvalue) == (0.2, 0.5, 0.01)
    with pytest.raises(ConfigError, match=r"data\.validate\.max_missing"):
        parse_project_config({"data": {"validate": {"max_missing": 2}}})
    with pytest.raises(ConfigError, match=r"data\.validate\.drift"):
        parse_project_config({"data": {"validate": {"drift": {"kl": 1}}}})


def test_a_file_deleted_from_the_drop_folder_makes_a_version_without_it(
    tmp_path: Path, project: Project, db: Database
) -> None:
    from store import datasets

    folder = tmp_path / "lake"
    folder.mkdir()
    repo = project.repo_config(data_lake=(DataLakeEntry(folder=str(folder)),))
    settings = make_settings(tmp_path, (repo,), db_url=db.url)
    project.push()
    watcher = FolderWatcher(settings, db, settle=0)
    for name in ("keep.csv", "gone.csv"):
        (folder / name).write_text(f"x,y\n1,{name[0]}\n")
    watcher.scan_once(now=0)
    watcher.scan_once(now=1)
    assert prepare_run(settings, db, _pending(db)).run_id is not None
    assert [e["path"] for e in datasets.manifest(db, "churn", 1)[0]] == ["gone.csv", "keep.csv"]
    (folder / "gone.csv").unlink()
    watcher.scan_once(now=2)
    assert prepare_run(settings, db, _pending(db)).run_id is None  # a removal alone starts no run
    assert datasets.current_number(db, "churn") == 2
    manifest, _sha = datasets.manifest(db, "churn", 2)
    assert [e["path"] for e in manifest] == ["keep.csv"]


def test_landings_at_once_each_make_a_version_on_top_of_the_other(db: Database) -> None:
    """Eight threads land a file each: the unique version number makes the losers retry (the one
    retry policy) on top of the winner, so versions 1..8 hold 1..8 files and none is lost."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from store import datasets

    start = Barrier(8)

    def land(i: int) -> int:
        start.wait()
        entry = {"path": f"f{i}.csv", "sha256": f"{i}" * 64, "size": 1, "rows": 1}
        return datasets.land(db, "churn", [entry], [], trigger={"kind": "data"})

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(pool.map(land, range(8)))
    assert numbers == list(range(1, 9))
    manifest, _sha = datasets.manifest(db, "churn", 8)
    assert sorted(e["path"] for e in manifest) == [f"f{i}.csv" for i in range(8)]
    assert datasets.land(db, "churn", [manifest[0]], [], trigger={"kind": "data"}) == 8  # no change
