"""The dashboard's own views on both databases: a model's release timeline and its traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service import create_app
from service.state import loopline
from store import datasets, telemetry
from tests.conftest import make_settings
from tests.dashboard_fixtures import seed, sha


@pytest.fixture
def seeded(tmp_path: Path, db_url: str) -> Iterator[tuple[FlaskClient, dict[str, Any]]]:
    app = create_app({"settings": make_settings(tmp_path, db_url=db_url), "TESTING": True})
    with app.app_context():
        ids = seed(loopline().db)
    yield app.test_client(), ids
    app.extensions["gateway"].close()
    with app.app_context():
        loopline().db.dispose()


def test_timeline_names_trigger_diff_gate_approval_and_trial(
    seeded: tuple[FlaskClient, dict[str, Any]],
) -> None:
    client, _ = seeded
    tl = client.get("/api/models/iris-classifier/timeline").get_json()
    assert [v["version"] for v in tl["versions"]] == [5, 4, 3, 2, 1]
    v5, v4, v3 = tl["versions"][:3]
    assert v5["aliases"] == ["candidate", "production", "staging"]
    assert v5["trigger"]["message"].startswith("Tune the forest: 350 trees")
    assert v5["diff"]["params"] == [{"key": "n_estimators", "from": 300, "to": 350}]
    assert v5["diff"]["commit"] == {"from": sha("commit5"), "to": sha("commit6")}
    assert v5["gate"]["passed"] is True
    active, trial = v5["releases"]
    assert (active["status"], active["commit"], active["approval"]["by"]) == (
        "active",
        sha("commit13"),
        "ann",
    )
    assert trial["trial"]["verdict"] == "promote" and len(trial["trial"]["series"]) == 11
    assert trial["trial"]["limits"] == {"max_error_rate": 0.05, "max_p99_ms": 500.0}
    assert v4["deployable"] is False and v4["branch"] == "experiment/wider-trees"
    assert v3["trigger"]["kind"] == "data" and v3["trigger"]["objects"][0]["key"] == "iris/iris-2024-06.csv"
    assert v3["releases"][0]["status"] == "standby"
    assert client.get("/api/models/nope/timeline").get_json()["error"] == "not_found"


def test_traffic_per_release_and_application(seeded: tuple[FlaskClient, dict[str, Any]]) -> None:
    client, ids = seeded
    traffic = client.get("/api/models/iris-classifier/traffic?minutes=60").get_json()
    assert traffic["step_seconds"] == 30  # an hour in at most 120 points
    by_id = {r["id"]: r for r in traffic["releases"]}
    points = by_id[ids["v5"]]["points"]
    assert len(points) == 29 and sum(p["requests"] for p in points) == 2030
    assert all(p["p99_ms"] is not None and p["applications"] for p in points)
    assert (
        by_id[ids["v3"]]["status"] == "standby"
        and sum(p["requests"] for p in by_id[ids["v3"]]["points"]) == 45
    )
    apps = {a["application"]: a for a in traffic["applications"]}
    assert apps["checkout-web"]["versions"] == {"5": 1740} and apps["legacy-cron"]["versions"] == {"3": 45}
    short = client.get("/api/models/iris-classifier/traffic?minutes=15").get_json()
    assert (
        sum(p["requests"] for p in next(r for r in short["releases"] if r["id"] == ids["v5"])["points"])
        < 2030
    )
    for bad in ("0", "x", "10081", "-5"):
        answer = client.get(f"/api/models/iris-classifier/traffic?minutes={bad}")
        assert answer.status_code == 400 and answer.get_json()["error"] == "bad_parameter"


def test_data_batches_with_drift_per_feature(seeded: tuple[FlaskClient, dict[str, Any]]) -> None:
    client, ids = seeded
    data = client.get("/api/models/iris-classifier/data").get_json()
    assert data["repository"] == "iris-demo"
    [batch] = data["batches"]
    assert batch["run_id"] == ids["data"] and batch["drift_limit"] == 3.0
    assert batch["files"][0]["drift"]["petal_length"] == 3.62 and batch["files"][0]["drifted"] == [
        "petal_length"
    ]
    assert client.get("/api/models/fraud-detector/data").get_json()["batches"] == []
    assert client.get("/api/models/nope/data").status_code == 404


def test_data_names_the_dataset_versions_with_sizes_and_changes(
    seeded: tuple[FlaskClient, dict[str, Any]],
) -> None:
    client, ids = seeded
    [v1] = client.get("/api/models/iris-classifier/data").get_json()["datasets"]
    assert (v1["version"], v1["files"], v1["bytes"], v1["rows"]) == (1, 1, 4506, 150)
    assert v1["run_id"] == ids["data"] and v1["trigger"]["added"] == ["iris-2024-06.csv"]
    entry = {"path": "batch-2.csv", "sha256": "b" * 64, "size": 2048, "rows": 50}
    with client.application.app_context():
        db = loopline().db
        datasets.land(db, "iris-demo", [entry], [], trigger={"kind": "data"})
        datasets.land(db, "iris-demo", [], ["iris-2024-06.csv"], trigger={"kind": "removal"})
    v3, v2, _ = client.get("/api/models/iris-classifier/data").get_json()["datasets"]
    assert (v2["files"], v2["bytes"], v2["rows"], v2["trigger"]["added"]) == (2, 6554, 200, ["batch-2.csv"])
    assert v3["files"] == 1 and v3["run_id"] is None
    assert (v3["trigger"]["kind"], v3["trigger"]["removed"]) == ("removal", ["iris-2024-06.csv"])
    assert client.get("/api/models/fraud-detector/data").get_json()["datasets"] == []


def test_trial_point_compares_the_window_only() -> None:
    stable_before = telemetry.ReleaseStats(requests=1000, errors=10, buckets={"0.01": 1000}, apps={"a": 1000})
    stable_now = telemetry.ReleaseStats(
        requests=1100, errors=10, buckets={"0.01": 1050, "0.5": 50}, apps={"a": 1100}
    )
    canary = telemetry.ReleaseStats(requests=10, errors=1, buckets={"0.01": 10})
    point = telemetry.trial_point(3.04, canary, stable_now.minus(stable_before))
    assert point["t"] == 3.0
    assert point["canary"] == {"requests": 10, "errors": 1, "error_rate": 0.1, "p99_ms": 9.95}
    assert point["stable"]["requests"] == 100 and point["stable"]["errors"] == 0
    assert point["stable"]["p99_ms"] is not None and point["stable"]["p99_ms"] > 250
