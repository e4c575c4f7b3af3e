"""A model's lifecycle with the real sample project: ``dvc repro`` and scikit-learn, the evaluation
gate, registration, approval and a deployed server answering ``/predict`` — stage by stage
through :func:`workers.runner.execute`, without Celery (``test_e2e.py`` runs the same through
real workers). Unit and integration tests of the sample project are not what is tested here,
so those stages are left out of the runs.

These tests train real models, so they run on SQLite only; the store logic they rely on is
tested on both databases in ``test_approval.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select, update

from config.settings import Settings
from loopline.cli import main
from pipelines.events import ZERO_SHA
from service import create_app
from service.state import loopline
from store import releases
from store.blobs import open_store
from store.db import Database
from store.models import Deployment, ModelVersion, Run
from tests.conftest import Project, make_settings
from tests.test_actions_relay import Recorder
from tests.test_intake import deliver, run_of
from workers import artifacts, runner, serving
from workers.intake import prepare_run
from workers.relay import relay_once

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    # deploy starts a server meant to outlive its stage (and, in a worker, the worker's task): here
    # the Popen handle is dropped while the server runs; the fixture stops every server it started.
    pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning"),
]
NOT_HERE = {"unit_tests", "integration_tests", "validate_data"}
TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}
GOOD_C, CRIPPLED_C, WEAKER_C = "C: 1.0", "C: 0.00001", "C: 0.001"


@pytest.fixture
def settings(tmp_path: Path, project: Project, db: Database) -> Iterator[Settings]:
    settings = make_settings(tmp_path, (project.repo_config(),), db_url=db.url, api_token="s3cret")
    yield settings
    with db.session() as s:  # deployed servers outlive their stage: stop them
        pids = [d.pid for d in s.scalars(select(Deployment)) if d.pid]
    for pid in pids:
        serving.stop(pid)


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    app = create_app({"settings": settings, "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def push(
    settings: Settings, db: Database, project: Project, files: dict[str, str] | None = None
) -> tuple[int, tuple[str, ...]]:
    """Commit ``files`` (or push the first version), deliver the push, plan its run."""
    before = ZERO_SHA
    if files:
        before = project.head()
        project.commit(files)
    project.push()
    prepared = prepare_run(settings, db, [deliver(db, project, before, project.head())])
    assert prepared.run_id is not None
    return prepared.run_id, prepared.stages


def walk(settings: Settings, db: Database, run_id: int, stages: tuple[str, ...]) -> dict[str, str]:
    """Run the stages in order like the Celery chain does: up to the first that does not succeed
    (a successful ``environment`` stage is left out of the answer)."""
    statuses: dict[str, str] = {}
    for name in stages:
        if name in NOT_HERE:
            continue
        statuses[name] = runner.execute(settings, db, run_id, name)
        if statuses[name] != "succeeded":
            break
    if statuses.get("environment") == "succeeded":  # built once per session; not what is tested here
        del statuses["environment"]
    return statuses


def params_with(project: Project, c: str) -> dict[str, str]:
    text = (project.work / "params.yaml").read_text()
    for old in (GOOD_C, CRIPPLED_C, WEAKER_C):
        text = text.replace(old, c)
    return {"params.yaml": text}


def stage_detail(db: Database, run_id: int, name: str) -> dict[str, Any]:
    stage = next(st for st in run_of(db, run_id).stages if st.name == name)
    return {"status": stage.status, "log": stage.log, **(stage.detail or {})}


@pytest.fixture
def deployed(settings: Settings, db: Database, project: Project) -> int:
    """The sample project's first version, trained, registered and serving (run id)."""
    run_id, stages = push(settings, db, project)
    assert walk(settings, db, run_id, stages) == {
        "retrain": "succeeded",
        "evaluate": "succeeded",
        "register": "succeeded",
        "deploy": "succeeded",
    }
    return run_id


def test_a_crippling_retrain_is_stopped_and_production_keeps_serving(
    settings: Settings, db: Database, project: Project, deployed: int, client: FlaskClient
) -> None:
    first = stage_detail(db, deployed, "evaluate")
    assert first["passed"] and first["production"] is None and "no production model yet" in first["verdict"]

    run_id, stages = push(settings, db, project, params_with(project, CRIPPLED_C))
    assert walk(settings, db, run_id, stages) == {"retrain": "succeeded", "evaluate": "gate_failed"}
    run = run_of(db, run_id)
    assert run.status == "gate_failed" and run.reason == "stage evaluate gate failed"
    assert {st.name: st.status for st in run.stages}["register"] == "skipped"
    assert {st.name: st.status for st in run.stages}["deploy"] == "skipped"
    assert run.model_version is None and run.workspace is None
    with db.session() as s:
        assert [mv.version for mv in s.scalars(select(ModelVersion))] == [1]  # never registered

    gate = stage_detail(db, run_id, "evaluate")
    assert gate["metrics"]["accuracy"] < 0.7 and gate["metrics"]["log_loss"] > 0.4
    assert gate["production"]["version"] == 1 and gate["production"]["source"] == "same_data"
    assert gate["production"]["metrics"]["accuracy"] > 0.95
    failed = {(c["check"], c["metric"]) for c in gate["checks"] if not c["passed"]}
    assert failed == {("min", "accuracy"), ("max", "log_loss"), ("max_drop_vs_production", "accuracy")}
    drop = next(c for c in gate["checks"] if c["check"] == "max_drop_vs_production")
    assert drop["delta"] == pytest.approx(drop["value"] - drop["production"]) and drop["max_drop"] == 0.02
    assert gate["verdict"].startswith("failed: accuracy=") and "on the same data" in gate["verdict"]
    assert gate["thresholds"]["bounds"][1:] == [
        {"metric": "roc_auc", "min": 0.9, "max": None},
        {"metric": "log_loss", "min": None, "max": 0.4},
    ]
    log = gate["log"]
    assert "-m src.train.evaluate" in log and "(sha256" in log and "verified" in log  # production re-scored
    assert "accuracy" in log.split("[loopline] gate:")[0]  # the table of every number compared
    assert f"[loopline] gate: {gate['verdict']}" in log

    # Production still serves version 1, from the very file the registry recorded.
    current = client.get("/api/deployments/current?model=churn").json
    assert current["model_version"]["version"] == 1 and current["deployment"]["run_id"] == deployed
    served = requests.post(
        current["deployment"]["url"] + "/predict", json={"instances": [[14.0] * 30]}, timeout=5
    ).json()
    mv = current["model_version"]
    assert served["model_sha256"] == mv["sha256"]
    assert hashlib.sha256(open_store(settings.storage).get(mv["sha256"])).hexdigest() == mv["sha256"]


def test_lineage_names_every_link(
    settings: Settings, db: Database, project: Project, deployed: int, client: FlaskClient
) -> None:
    current = client.get("/api/deployments/current?model=churn").json
    head = project.head()
    (delivery,) = current["deliveries"]
    assert delivery["provider"] == "git" and delivery["delivery_id"] == f"refs/heads/main:{head}"
    assert delivery["received_at"] and delivery["event"]["after"] == head
    assert current["commit"] == {
        "repository": "churn",
        "sha": head,
        "ref": "refs/heads/main",
        "branch": "main",
        "message": "Churn model: first version",
    }
    data = current["data"]
    assert {"data/raw", "data/prepared", "models/model.pkl", "src/train/train.py"} <= set(data["dvc"])
    assert all(len(md5.removesuffix(".dir")) == 32 for md5 in data["dvc"].values())
    assert data["dvc_stages"] == ["prepare", "train", "evaluate"]
    assert data["params"]["train"]["C"] == 1.0
    assert [(f["path"], f["status"], f["kind"]) for f in data["files"]] == [
        ("data/raw/base.csv", "A", "data")
    ]
    dataset = data["dataset"]  # the training data: nothing landed yet, the commit's base.csv
    assert dataset["version"] == 0 and [(f["path"], f["source"]) for f in dataset["files"]] == [
        ("base.csv", "commit")
    ]
    run = current["run"]
    assert run["id"] == deployed and run["trigger"] == "push"
    assert set(run["kinds"]) == {"data", "training_code", "app_code"}
    by_name = {st["name"]: st for st in run["stages"]}
    assert all(by_name[n]["started_at"] and by_name[n]["finished_at"] for n in ("retrain", "evaluate"))
    assert by_name["retrain"]["exit_code"] == 0 and by_name["evaluate"]["detail"]["passed"] is True
    assert current["gate"]["passed"] and current["gate"]["verdict"].startswith("passed: accuracy=")
    env = current["environment"]  # what the commands ran with, in the sandbox
    assert env["kind"] == "requirements" and env["source"] == "requirements.txt" and len(env["hash"]) == 20
    assert env["python"].startswith("3.11.") and env["sandbox"] in ("bwrap", "setpriv", "none")
    mv = current["model_version"]
    assert (mv["version"], mv["commit"], mv["branch"], mv["run_id"]) == (1, head, "main", deployed)
    assert mv["delivery_id"] == delivery["id"] and mv["created_at"]
    assert mv["metrics"]["accuracy"] > 0.95 and mv["params"]["train"]["C"] == 1.0
    dep = current["deployment"]
    assert dep["status"] == "active" and dep["url"].startswith("http://127.0.0.1:") and dep["created_at"]
    assert dep["approval"] is None  # this run needed none
    health = requests.get(dep["url"] + "/healthz", timeout=5).json()
    assert (
        health["model_sha256"]
        == mv["sha256"]
        == hashlib.sha256(open_store(settings.storage).get(mv["sha256"])).hexdigest()
    )

    version = client.get("/api/models/churn/versions/1").json
    assert version["sha256"] == mv["sha256"] and version["lineage"] == current
    models = client.get("/api/models").json["models"]
    assert models == [
        {
            "name": "churn",
            "versions": 1,
            "latest_version": 1,
            "production_version": 1,
            "latest_created_at": mv["created_at"],
            "latest_gate": current["gate"],
        }
    ]

    env = {"LOOPLINE_HOME": str(settings.home), "LOOPLINE_DATABASE_URL": db.url, "LOOPLINE_CONFIG": ""}
    cli = CliRunner()
    listed = cli.invoke(main, ["models", "list"], env=env)
    assert listed.exit_code == 0 and "churn  1" in listed.output and "accuracy=0.9" in listed.output
    shown = cli.invoke(main, ["models", "show", "churn"], env=env)
    assert shown.exit_code == 0 and "v1 *" in shown.output and head[:10] in shown.output
    chain = cli.invoke(main, ["models", "show", "churn", "1"], env=env)
    assert chain.exit_code == 0, chain.output
    for text in (f"commit      {head} on main", "delivery    git", "run         #", mv["sha256"], dep["url"]):
        assert text in chain.output
    as_json = cli.invoke(main, ["models", "show", "churn", "1", "--json"], env=env)
    assert as_json.exit_code == 0 and '"lineage"' in as_json.output
    missing = cli.invoke(main, ["models", "show", "churn", "7"], env=env)
    assert missing.exit_code == 1 and "no version 7" in missing.output


def test_champion_and_challenger_are_scored_on_the_same_data(
    settings: Settings, db: Database, project: Project, deployed: int
) -> None:
    # Production's recorded accuracy came from other data; a weaker candidate beats that number …
    with db.session() as s:
        s.execute(update(ModelVersion).values(metrics={"accuracy": 0.9, "log_loss": 0.3, "roc_auc": 0.95}))
    run_id, stages = push(settings, db, project, params_with(project, WEAKER_C))
    assert walk(settings, db, run_id, stages) == {"retrain": "succeeded", "evaluate": "gate_failed"}
    gate = stage_detail(db, run_id, "evaluate")
    assert 0.9 < gate["metrics"]["accuracy"] < 0.95  # passes every absolute threshold …
    assert [c["check"] for c in gate["checks"] if not c["passed"]] == ["max_drop_vs_production"]
    # … but loses to production scored on this run's own held-out data.
    assert gate["production"]["source"] == "same_data" and gate["production"]["metrics"]["accuracy"] > 0.95
    assert gate["production_value"] == gate["production"]["metrics"]["accuracy"]
    assert "vs production v1 on the same data" in gate["verdict"]


def test_a_tampered_production_artifact_fails_the_gate(
    settings: Settings, db: Database, project: Project, deployed: int
) -> None:
    with db.session() as s:
        mv = s.scalars(select(ModelVersion)).one()
        artifact, registered = artifacts.local(settings, mv.artifact_path, mv.sha256), mv.sha256
    artifact.chmod(0o644)
    artifact.write_bytes(artifact.read_bytes() + b"\0")  # someone changed the registry's file
    run_id, stages = push(
        settings,
        db,
        project,
        {"src/train/train.py": (project.work / "src/train/train.py").read_text() + "\n"},
    )
    assert walk(settings, db, run_id, stages) == {"retrain": "succeeded", "evaluate": "gate_failed"}
    gate = stage_detail(db, run_id, "evaluate")
    assert gate["passed"] is False and "metrics" not in gate["production"]  # never loaded, never scored
    assert f"not the registered {registered}; refusing to load it" in gate["verdict"]
    assert "src.train.evaluate" not in gate["log"]
    with db.session() as s:
        assert s.scalars(select(ModelVersion.version)).all() == [1]


def test_approval_names_what_ships_and_deploy_keeps_to_it(
    settings: Settings, db: Database, project: Project, client: FlaskClient
) -> None:
    config = (
        (project.work / "loopline.yml")
        .read_text()
        .replace(
            "target: local,",
            "target: local, approval: {required: true, branches: [main], expires_after: 1h},",
        )
    )
    project.commit({"loopline.yml": config})
    run_id, stages = push(settings, db, project)
    assert stages[-2:] == ("approval", "deploy")
    assert walk(settings, db, run_id, stages)["approval"] == "awaiting_approval"
    assert run_of(db, run_id).status == "awaiting_approval"
    waiting = client.get(f"/api/runs/{run_id}").json["approval"]
    head = project.head()
    assert (waiting["status"], waiting["commit"], waiting["model"], waiting["model_version"]) == (
        "awaiting_approval",
        head,
        "churn",
        1,
    )
    assert waiting["expires_at"] > waiting["requested_at"]

    url = f"/api/runs/{run_id}/approve"
    wrong = client.post(url, json={"model_version": 2}, headers=TOKEN)
    assert wrong.status_code == 409 and wrong.json["error"] == "approval_mismatch"
    assert "would ship model version 1, not 2" in wrong.json["message"]
    assert client.post(url, json={"commit": "0" * 40}, headers=TOKEN).status_code == 409
    assert client.post(url, json={"model_version": "1"}, headers=TOKEN).json["error"] == "bad_body"
    answer = client.post(
        url, json={"comment": "metrics look right", "commit": head[:10], "model_version": 1}, headers=TOKEN
    )
    assert answer.status_code == 200, answer.json
    approval = answer.json["approval"]
    assert approval["decision"] == "approved" and approval["by"] == "ada"
    assert approval["comment"] == "metrics look right" and approval["at"]
    assert (approval["commit"], approval["model_version"]) == (head, 1)

    recorder = Recorder()
    relay_once(settings, db, recorder)
    first_queued = next(n for n in stages if stage_detail(db, run_id, n)["status"] == "queued")
    assert recorder.resumed == [(run_id, first_queued)]  # due again: the first stage still queued
    assert runner.execute(settings, db, run_id, "deploy") == "succeeded"
    assert run_of(db, run_id).status == "succeeded"
    assert "approved by ada: commit" in stage_detail(db, run_id, "deploy")["log"]
    current = client.get("/api/deployments/current?model=churn").json
    assert current["deployment"]["approval"]["comment"] == "metrics look right"
    assert current["deployment"]["approval"]["model_version"] == 1

    # An app change ships production (v1); its approval names v1. Before it deploys, v2 becomes
    # production: the deploy would now release v2, which nobody approved.
    run_id, stages = push(settings, db, project, {"app/extra.py": "X = 1\n"})
    assert stages == ("environment", "unit_tests", "integration_tests", "approval", "deploy")
    assert runner.execute(settings, db, run_id, "approval") == "awaiting_approval"
    assert client.post(f"/api/runs/{run_id}/approve", headers=TOKEN).json["approval"]["model_version"] == 1
    with db.session() as s:
        v1 = s.scalars(select(ModelVersion)).one()
        fields = {c: getattr(v1, c) for c in ("run_id", "repository", "commit", "data_version", "params")}
        s.add(
            ModelVersion(
                name="churn",
                version=2,
                metrics={},
                artifact_path=v1.artifact_path,
                sha256=v1.sha256,
                **fields,
            )
        )
    with db.session() as s:  # as a deploy by command would: v2 becomes production
        dep = Deployment(model_name="churn", version=2, run_id=v1.run_id, target="command")
        releases.promote(s, dep, actor="user:test", reason="production moved after the approval")
    assert runner.execute(settings, db, run_id, "deploy") == "failed"
    refused = stage_detail(db, run_id, "deploy")
    assert "ada approved churn v1" in refused["error"] and "would release churn v2" in refused["error"]
    assert "nothing deployed" in refused["error"]
    with db.session() as s:
        assert s.scalars(select(Deployment.version).where(Deployment.status == "active")).all() == [2]
    assert run_of(db, run_id).status == "failed"
    with db.session() as s:
        assert s.get(Run, run_id).reason == "stage deploy failed"
