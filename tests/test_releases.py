"""Deploying with real processes: the sample app's releases, a canary trial judged on the
gateway's telemetry, automatic rollback, promotion, the CLI's rollback and promote, the
command target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from config.settings import Settings
from service import create_app
from service.gateway import ROUTE_TTL
from store import aliases, releases
from store.db import Database
from store.models import Deployment
from store.registry import model_version
from tests.conftest import Project, make_settings, outside_env
from tests.release_helpers import ROWS, real_model, register
from workers import releases as processes
from workers import serving
from workers.projects import mirror, project_in
from workers.steps import StepContext, StepResult
from workers.steps.deploy import deploy

CANARY = (
    "deploy: {target: local, command: 'python -m app.server', canary_percent: 50, "
    "canary_window_seconds: 4, min_requests: 8, max_error_rate: 0.2}"
)
BROKEN_APP = (
    "        predictions = [int(p) for p in model.predict(rows)]\n",
    "        raise RuntimeError('this release is broken')\n",
)


def set_deploy(project: Project, line: str) -> str:
    config = (project.work / "loopline.yml").read_text()
    deploy_line = next(x for x in config.splitlines() if x.strip().startswith("deploy:"))
    return project.commit({"loopline.yml": config.replace(deploy_line, "  " + line)}, "deploy config")


def context(settings: Settings, db: Database, project: Project, run_id: int, commit: str) -> StepContext:
    log = (settings.home / f"deploy-{run_id}.log").open("ab")
    return StepContext(
        settings=settings,
        db=db,
        run_id=run_id,
        repo=settings.repositories[0],
        project=project_in(project.work),
        worktree=project.work,
        commit=commit,
        ref="refs/heads/main",
        log=log,
    )


class Deploys:
    """Register a version at a commit, then run the real deploy step for it."""

    def __init__(self, settings: Settings, db: Database, project: Project) -> None:
        self.settings, self.db, self.project = settings, db, project
        self.version = 0

    def release(self, commit: str) -> StepContext:
        self.project.push()
        mirror(self.settings, self.settings.repositories[0]).update()
        self.version += 1
        mv = register(self.db, self.settings.home, "churn", self.version, real_model(), commit=commit)
        return context(self.settings, self.db, self.project, mv.run_id, commit)

    def run(self, ctx: StepContext) -> StepResult:
        try:
            return deploy(ctx)
        finally:
            ctx.log.close()


@pytest.fixture
def deploys(tmp_path: Path, project: Project, db: Database) -> Iterator[Deploys]:
    settings = make_settings(tmp_path, (project.repo_config(),), db_url=db.url)
    yield Deploys(settings, db, project)
    processes.stop_all(db)


@pytest.fixture
def gateway(deploys: Deploys) -> Iterator[FlaskClient]:
    app = create_app({"settings": deploys.settings, "TESTING": True})
    yield app.test_client()
    app.extensions["gateway"].close()
    app.extensions["loopline"].db.dispose()


def predict(client: FlaskClient) -> tuple[str, int]:
    answer = client.post("/serve/churn/predict", json={"instances": ROWS})
    return answer.headers.get("X-Loopline-Model-Version", "-"), answer.status_code


def trial(deploys: Deploys, ctx: StepContext, client: FlaskClient) -> tuple[StepResult, Counter[Any]]:
    """Run the deploy step while predictions go through the gateway, as users' would."""
    result: list[StepResult] = []
    worker = threading.Thread(target=lambda: result.append(deploys.run(ctx)))
    worker.start()
    served: Counter[Any] = Counter()
    deadline = time.monotonic() + 90
    while worker.is_alive() and time.monotonic() < deadline:
        served[predict(client)] += 1
        time.sleep(0.02)
    worker.join()
    return result[0], served


def production(db: Database) -> int | None:
    with db.session() as s:
        return aliases.version_of(s, "churn", "production")


def state(db: Database) -> dict[str, Any]:
    with db.session() as s:
        return releases.state(s, "churn")


def cli(deploys: Deploys, *args: str) -> subprocess.CompletedProcess[str]:
    env = outside_env()
    env.update(
        LOOPLINE_HOME=str(deploys.settings.home),
        LOOPLINE_DATABASE_URL=deploys.db.url,
        LOOPLINE_CONFIG="",
        USER="grace",
    )
    return subprocess.run(
        [sys.executable, "-m", "loopline", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_canary_rolls_back_a_failing_release_promotes_a_healthy_one_and_the_cli_rolls_back(
    deploys: Deploys, gateway: FlaskClient
) -> None:
    good = set_deploy(deploys.project, CANARY)
    first = deploys.run(deploys.release(good))  # nothing serves yet: promoted without a trial
    assert first.status == "succeeded" and production(deploys.db) == 1
    v1 = state(deploys.db)["releases"][0]
    assert (v1["version"], v1["status"], v1["traffic_percent"]) == (1, "active", 100)

    # v2's app answers 500 to every prediction: rolled back before its window is over.
    app = (deploys.project.work / "app" / "server.py").read_text()
    broken = deploys.project.commit({"app/server.py": app.replace(*BROKEN_APP)}, "break predict")
    result, served = trial(deploys, deploys.release(broken), gateway)
    assert result.status == "failed" and result.exit_code == 1
    assert "canary rolled back: error rate" in result.detail["error"]
    assert "> max_error_rate 20.0%" in result.detail["error"]
    assert served[("2", 500)] >= 8 and served[("1", 200)] > 0 and not served[("1", 500)]
    assert result.detail["telemetry"]["canary"]["errors"] >= 8
    assert production(deploys.db) == 1
    now = state(deploys.db)
    assert now["aliases"]["staging"] == 2
    assert [(r["version"], r["status"], r["traffic_percent"]) for r in now["releases"]] == [
        (1, "active", 100)
    ]
    with pytest.raises(requests.ConnectionError):  # the canary was stopped
        requests.get(result.detail["url"] + "/healthz", timeout=2)
    time.sleep(ROUTE_TTL + 0.1)
    assert {predict(gateway) for _ in range(20)} == {("1", 200)}

    # v3 is healthy: promoted by the trial; v1 stays running as the standby.
    result, served = trial(deploys, deploys.release(good), gateway)
    assert result.status == "succeeded", result.detail
    assert result.detail["verdict"] == "promote" and served[("3", 200)] >= 8
    assert production(deploys.db) == 3
    now = state(deploys.db)
    assert [(r["version"], r["status"], r["traffic_percent"]) for r in now["releases"]] == [
        (3, "active", 100),
        (1, "standby", 0),
    ]
    assert requests.get(v1["url"] + "/healthz", timeout=2).ok
    time.sleep(ROUTE_TTL + 0.1)
    assert {predict(gateway) for _ in range(20)} == {("3", 200)}

    # `loopline models rollback`: v1 serves again at once, through the gateway and directly.
    back = cli(deploys, "rollback", "churn", "--comment", "v3 looks off")
    assert back.returncode == 0, back.stderr
    assert "production v1" in back.stdout
    time.sleep(ROUTE_TTL + 0.1)
    assert {predict(gateway) for _ in range(20)} == {("1", 200)}
    direct = requests.post(v1["url"] + "/predict", json={"instances": ROWS}, timeout=5)
    assert direct.ok and len(direct.json()["predictions"]) == len(ROWS)

    # The standby (v3) died: rolling back restarts it from its release directory.
    v3 = next(r for r in state(deploys.db)["releases"] if r["version"] == 3)
    with deploys.db.session() as s:
        pid = s.get(Deployment, v3["id"]).pid
    serving.stop(pid)
    again = cli(deploys, "rollback", "churn")
    assert again.returncode == 0, again.stderr
    assert "is not running: restarting it from" in again.stderr and "production v3" in again.stdout
    time.sleep(ROUTE_TTL + 0.1)
    assert {predict(gateway) for _ in range(20)} == {("3", 200)}

    # Promoting v2 (no release runs it) starts it from its release directory; v1 is retired.
    promoted = cli(deploys, "promote", "churn", "2")
    assert promoted.returncode == 0, promoted.stderr
    assert [(r["version"], r["status"]) for r in state(deploys.db)["releases"]] == [
        (2, "active"),
        (3, "standby"),
    ]
    with pytest.raises(requests.ConnectionError):
        requests.get(v1["url"] + "/healthz", timeout=2)

    moves = [
        (m["alias"], m["from_version"], m["to_version"], m["actor"]) for m in state(deploys.db)["history"]
    ]
    runs = {m[3] for m in moves if m[3].startswith("run:")}
    assert len(runs) == 3  # the deploy of v1, and the canary starts of v2 and v3
    assert [m for m in reversed(moves) if m[0] == "production"] == [
        ("production", None, 1, moves[-1][3]),
        ("production", 1, 3, "canary:auto"),
        ("production", 3, 1, "user:grace"),
        ("production", 1, 3, "user:grace"),
        ("production", 3, 2, "user:grace"),
    ]
    assert [m[1:3] for m in reversed(moves) if m[0] == "staging"] == [(None, 2), (2, 3)]


def test_cli_errors_are_one_line(deploys: Deploys) -> None:
    missing = cli(deploys, "rollback", "churn")
    assert missing.returncode == 1 and missing.stderr.strip() == "Error: churn is not deployed"
    unknown = cli(deploys, "promote", "churn", "7")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "Error: no version 7 of model 'churn'"


DEPLOY_SCRIPT = """\
import json, os, sys
env = {{k: v for k, v in os.environ.items() if k.startswith("LOOPLINE_")}}
with open({out!r}, "a") as fh:
    fh.write(json.dumps(env) + "\\n")
sys.exit({code})
"""


def test_command_target_gets_the_release_in_its_environment_and_its_exit_status_decides(
    tmp_path: Path, deploys: Deploys
) -> None:
    project = deploys.project
    out = project.work / "models" / "deployed.jsonl"  # the sandbox writes in its worktree only
    out.parent.mkdir(exist_ok=True)
    set_deploy(project, "deploy: {target: command, command: 'python deploy.py'}")
    ok = project.commit({"deploy.py": DEPLOY_SCRIPT.format(out=str(out), code=0)}, "deploy script")
    for _ in (1, 2):
        assert deploys.run(deploys.release(ok)).status == "succeeded"
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    with deploys.db.session() as s:
        mv = model_version(s, "churn", 2)
        assert mv is not None
    assert second == {
        "LOOPLINE_MODEL_NAME": "churn",
        "LOOPLINE_MODEL_VERSION": "2",
        "LOOPLINE_MODEL_PATH": mv.artifact_path,
        "LOOPLINE_MODEL_SHA256": mv.sha256,
        "LOOPLINE_COMMIT": ok,
        "LOOPLINE_PREVIOUS_VERSION": "1",
    }
    assert first["LOOPLINE_PREVIOUS_VERSION"] == "" and production(deploys.db) == 2

    failing = project.commit({"deploy.py": DEPLOY_SCRIPT.format(out=str(out), code=3)}, "deploy fails")
    result = deploys.run(deploys.release(failing))
    assert result.status == "failed" and result.exit_code == 3
    assert production(deploys.db) == 2 and len(out.read_text().splitlines()) == 3


def builtin_release(tmp_path: Path) -> Path:
    """A release directory whose project has no app of its own (the built-in model server) and
    runs on Loopline's own interpreter (``environment: inherit``: no environment to build)."""
    directory = tmp_path / "release"
    directory.mkdir(exist_ok=True)
    (directory / "loopline.yml").write_text("environment: inherit\n")
    return directory


def test_up_restores_what_served_and_fails_an_interrupted_canary(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db_url=db.url)
    ids: dict[int, int] = {}
    release = builtin_release(tmp_path)
    for version, status, percent in ((1, "standby", 0), (2, "active", 90), (3, "canary", 10)):
        mv = register(db, settings.home, "churn", version, real_model())
        server = processes.start(settings, release, artifact=Path(mv.artifact_path), sha256=mv.sha256)
        with db.session() as s:
            dep = Deployment(
                model_name="churn",
                version=version,
                run_id=mv.run_id,
                target="local",
                url=server.url,
                pid=server.pid,
                release_dir=str(release),
                status=status,
                traffic_percent=percent,
            )
            s.add(dep)
            s.flush()
            ids[version] = dep.id
    try:
        old = {r["version"]: r["url"] for r in state(db)["releases"]}
        processes.stop_all(db)  # `loopline up` exits
        for url in old.values():
            with pytest.raises(requests.ConnectionError):
                requests.get(url + "/healthz", timeout=2)
        said: list[str] = []
        processes.restore(settings, db, said.append)  # the next `loopline up`
        now = {r["version"]: r for r in state(db)["releases"]}
        assert [(v, r["status"], r["traffic_percent"]) for v, r in sorted(now.items())] == [
            (1, "standby", 0),
            (2, "active", 100),
        ]
        for release in now.values():
            answer = requests.post(release["url"] + "/predict", json={"instances": ROWS}, timeout=5)
            assert answer.ok and release["url"] != old[release["version"]]
        assert sum("is not running: restarting it" in line for line in said) == 2
        with db.session() as s:
            assert s.get(Deployment, ids[3]).status == "failed"
    finally:
        processes.stop_all(db)


def test_a_release_whose_artifact_changed_is_never_started(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db_url=db.url)
    mv = register(db, settings.home, "churn", 1, real_model())
    Path(mv.artifact_path).write_bytes(Path(mv.artifact_path).read_bytes() + b"tampered")
    with pytest.raises(releases.ReleaseError, match="does not match its registered sha256"):
        processes.start(
            settings, builtin_release(tmp_path), artifact=Path(mv.artifact_path), sha256=mv.sha256
        )


def test_a_canary_whose_process_died_ends_its_trial_saying_so(deploys: Deploys) -> None:
    """The host's keep-alive fails a canary whose process died (``revive``); the deploy stage
    watching its trial reports why, not a rollback by hand."""
    good = set_deploy(deploys.project, CANARY)
    assert deploys.run(deploys.release(good)).status == "succeeded"
    ctx = deploys.release(good)
    result: list[StepResult] = []
    worker = threading.Thread(target=lambda: result.append(deploys.run(ctx)))
    worker.start()
    pid, deadline = None, time.monotonic() + 60
    while pid is None and time.monotonic() < deadline:
        with deploys.db.session() as s:
            pid = s.scalar(select(Deployment.pid).where(Deployment.status == "canary"))
        time.sleep(0.05)
    assert pid is not None, "no canary started"
    os.kill(pid, signal.SIGKILL)
    while serving.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes.revive(deploys.settings, deploys.db, lambda _line: None) == []
    worker.join(60)
    assert result and result[0].status == "failed"
    why = f"canary trial interrupted: its process {pid} died on host {deploys.settings.host}; failed"
    assert f"canary rolled back: {why}" in result[0].detail["error"]
    assert production(deploys.db) == 1
