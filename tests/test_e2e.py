"""End to end with real processes: a bare repo and its installed hook, the web process, Celery
workers over a real Redis, real ``dvc repro``, a deployed model answering ``/predict``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer

from loopline import cli
from loopline.demo import write_config
from loopline.hook import install_hook
from loopline.processes import Stack
from store import triggers
from store.blobs import open_store
from store.db import Database
from store.models import utcnow
from tests.conftest import ROOT, SYSTEM_REDIS, Project, outside_env
from workers.process import terminate
from workers.serving import free_port

pytestmark = pytest.mark.e2e
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled", "gate_failed"})


def _system_redis() -> str | None:
    try:
        client = redis.Redis.from_url(SYSTEM_REDIS, socket_connect_timeout=1)
        client.flushdb()
        client.close()
        return SYSTEM_REDIS
    except redis.RedisError:
        return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Project, Path]]:
    root = tmp_path_factory.mktemp("e2e")
    project = Project(root)
    lake = root / "lake"
    lake.mkdir()
    config = write_config(root / "loopline.yaml", project.remote, lake, "HOOK_SECRET")
    env = outside_env()
    env.update(
        LOOPLINE_HOME=str(root / "home"),
        LOOPLINE_CONFIG=str(config),
        HOOK_SECRET="e2e-secret",
        LOOPLINE_API_TOKEN="e2e-token",
    )
    broker = _system_redis()
    if broker:  # the Procfile shape: a real Redis over TCP; else the embedded one
        env["LOOPLINE_BROKER_URL"] = broker
    else:
        print("system Redis not reachable: e2e runs on the embedded broker", file=sys.stderr)
    with Stack(env, free_port()) as stack, (root / "flower.log").open("wb") as flower_log:
        install_hook(project.remote, f"{stack.url}/hooks/git", "churn", secret_env="HOOK_SECRET")
        flower_port = free_port()
        flower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "flower",
                "--address=127.0.0.1",
                f"--port={flower_port}",
            ],
            env={**stack.env, "FLOWER_BASIC_AUTH": "loop:line"},
            stdout=flower_log,
            stderr=subprocess.STDOUT,
        )
        try:
            stack.flower_url = f"http://127.0.0.1:{flower_port}"  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # Flower must be listening before the first push
                try:
                    if requests.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            yield stack, project, lake
        finally:
            terminate(flower, timeout=10)


def wait_run(
    stack: Stack, after_id: int, timeout: float = 240, until: frozenset[str] | set[str] = TERMINAL
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check()
        runs = [
            r for r in requests.get(f"{stack.url}/api/runs", timeout=5).json()["runs"] if r["id"] > after_id
        ]
        if runs and runs[-1]["status"] in until:
            return requests.get(f"{stack.url}/api/runs/{runs[-1]['id']}", timeout=5).json()
        time.sleep(0.25)
    raise AssertionError(
        f"no finished run after #{after_id} within {timeout}s; logs: {stack.settings.home}/logs"
    )


def test_push_trains_registers_and_deploys(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    out = project.push(env={"HOOK_SECRET": "e2e-secret"})
    assert "loopline: refs/heads/main accepted" in out
    run = wait_run(s, 0)
    assert run["status"] == "succeeded", run
    assert [st["name"] for st in run["stages"]] == [
        "validate_data",
        "environment",
        "unit_tests",
        "retrain",
        "evaluate",
        "register",
        "integration_tests",
        "deploy",
    ]
    assert all(st["status"] == "succeeded" and st["exit_code"] in (0, None) for st in run["stages"])
    starts = [st["started_at"] for st in run["stages"]]
    assert starts == sorted(starts)
    assert run["commit"] == project.head() and run["ref"] == "refs/heads/main"

    mv = requests.get(f"{s.url}/api/models/churn/versions/1", timeout=5).json()
    assert mv["commit"] == project.head() and mv["run_id"] == run["id"]
    assert mv["params"]["train"] == yaml.safe_load((project.work / "params.yaml").read_text())["train"]
    assert mv["metrics"]["accuracy"] > 0.9
    assert {"data/raw", "src/train/train.py", "models/model.pkl"} <= set(mv["data_version"])
    assert mv["artifact_path"].startswith(s.settings.storage)  # in object storage, by its sha256
    assert hashlib.sha256(open_store(s.settings.storage).get(mv["sha256"])).hexdigest() == mv["sha256"]

    current = requests.get(f"{s.url}/api/deployments/current", params={"model": "churn"}, timeout=5).json()
    assert current["model_version"]["version"] == 1 and current["run"]["id"] == run["id"]
    assert current["deliveries"][0]["event"]["after"] == project.head()
    answer = requests.post(
        current["deployment"]["url"] + "/predict", json={"instances": [[14.0] * 30, [20.0] * 30]}, timeout=5
    ).json()
    assert len(answer["predictions"]) == 2 and answer["model_sha256"] == mv["sha256"]

    event = requests.get(f"{s.url}/api/events/{current['deliveries'][0]['id']}", timeout=5).json()
    assert event["run_ids"] == [run["id"]] and "training_code" in event["classification"]["kinds"]


def test_flower_shows_the_tasks_behind_auth(stack: tuple[Stack, Project, Path]) -> None:
    s, _project, _lake = stack
    url = s.flower_url  # type: ignore[attr-defined]
    assert requests.get(f"{url}/api/tasks", timeout=5).status_code == 401
    tasks = requests.get(f"{url}/api/tasks", auth=("loop", "line"), timeout=5).json()
    names = [t["name"] for t in tasks.values()]
    assert "loopline.intake" in names and sum(n.startswith("loopline.stage.") for n in names) >= 7
    # each stage by name, under the id the dashboard links to (loopline-run<id>-<stage>)
    retrains = [i for i, t in tasks.items() if t["name"] == "loopline.stage.retrain"]
    assert retrains and all(i.startswith("loopline-run") and i.endswith("-retrain") for i in retrains)
    assert "e2e-secret" not in json.dumps(tasks)  # task arguments carry ids, never secrets


def test_docs_only_push_is_skipped(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    last = requests.get(f"{s.url}/api/runs", timeout=5).json()["runs"][0]["id"]
    project.commit({"docs/overview.md": "Updated docs.\n"})
    project.push(env={"HOOK_SECRET": "e2e-secret"})
    run = wait_run(s, last, timeout=60)
    assert run["status"] == "skipped" and run["stages"] == [] and run["kinds"] == []


def test_dropped_data_retrains_and_redeploys(stack: tuple[Stack, Project, Path]) -> None:
    s, project, lake = stack
    last = requests.get(f"{s.url}/api/runs", timeout=5).json()["runs"][0]["id"]
    old = requests.get(f"{s.url}/api/deployments/current", params={"model": "churn"}, timeout=5).json()
    subprocess.run(
        [sys.executable, "scripts/make_batch.py", "150", str(lake / "new.csv")],
        cwd=project.work,
        check=True,
        capture_output=True,
    )
    run = wait_run(s, last)
    assert run["status"] == "succeeded" and run["trigger"] == "data", run
    assert run["stages"][0]["name"] == "validate_data"
    current = requests.get(f"{s.url}/api/deployments/current", params={"model": "churn"}, timeout=5).json()
    assert current["model_version"]["version"] == 2
    assert (
        current["model_version"]["data_version"]["data/raw"]
        != old["model_version"]["data_version"]["data/raw"]
    )
    assert current["deliveries"][0]["event"]["objects"][0]["key"] == "new.csv"
    assert requests.post(
        current["deployment"]["url"] + "/predict", json={"instances": [[14.0] * 30]}, timeout=5
    ).ok
    # the previous release keeps running as the standby, for an instant rollback
    assert requests.get(old["deployment"]["url"] + "/healthz", timeout=2).ok
    model = requests.get(f"{s.url}/api/models/churn", timeout=5).json()
    assert model["aliases"] == {"candidate": 2, "staging": 2, "production": 2}
    assert [(r["version"], r["status"], r["traffic_percent"]) for r in model["releases"]] == [
        (2, "active", 100),
        (1, "standby", 0),
    ]
    assert [(m["alias"], m["to_version"]) for m in model["history"]][:3] == [
        ("production", 2),
        ("staging", 2),
        ("candidate", 2),
    ]
    time.sleep(1.1)  # the gateway's routing table is cached for a second
    answer = requests.post(f"{s.url}/serve/churn/predict", json={"instances": [[14.0] * 30]}, timeout=5)
    assert answer.ok and answer.headers["X-Loopline-Model-Version"] == "2"


def test_reproduce_rebuilds_a_version_on_the_trainer(stack: tuple[Stack, Project, Path]) -> None:
    """``loopline models reproduce --remote`` asks the API, which stores the request; the relay
    publishes it to the training queue and the trainer rebuilds v2 (trained on the dropped batch)
    from its lineage alone: the same sha256 and metrics."""
    s, _project, _lake = stack
    mv = requests.get(f"{s.url}/api/models/churn/versions/2", timeout=5).json()
    assert mv["dataset"]["version"] >= 1  # the drop is part of its lineage
    asked = CliRunner().invoke(
        cli.main,
        ["models", "reproduce", "churn", "2", "--remote", s.url, "--json"],
        env={"LOOPLINE_API_TOKEN": "e2e-token"},
    )
    assert asked.exit_code == 0, asked.output
    record = json.loads(asked.stdout)
    assert record["status"] == "succeeded" and record["requested_by"] == "api", record
    result = record["result"]
    assert result["matches"] and result["sha256"]["got"] == result["sha256"]["expected"] == mv["sha256"]
    assert result["metrics"]["got"] == mv["metrics"] and result["dataset_version"] == mv["dataset"]["version"]
    assert record["seconds"] > 0 and "retraining" in record["log"]
    assert result["log"] == f"logs/reproductions/{record['id']}.log"  # the trainer stored it
    whole = requests.get(f"{s.url}{record['url']}/log", timeout=5)  # the web process serves it
    assert whole.ok and "[loopline] retraining" in whole.text and whole.text.endswith(record["log"])
    listed = requests.get(f"{s.url}/api/models/churn/versions/2/reproductions", timeout=5).json()
    assert [r["id"] for r in listed["reproductions"]] == [record["id"]]


def test_approval_waits_without_a_worker_then_deploys(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    last = requests.get(f"{s.url}/api/runs", timeout=5).json()["runs"][0]["id"]
    config = (project.work / "loopline.yml").read_text()
    project.commit({"loopline.yml": config.replace("target: local,", "target: local, approval: required,")})
    project.push(env={"HOOK_SECRET": "e2e-secret"})
    run = wait_run(s, last, timeout=120, until={"awaiting_approval"})
    assert [st["name"] for st in run["stages"]][-2:] == ["approval", "deploy"]
    assert run["stages"][-1]["status"] == "queued"
    token = {"Authorization": "Bearer e2e-token", "X-Loopline-User": "ada"}
    assert requests.post(f"{s.url}/api/runs/{run['id']}/approve", timeout=5).status_code == 401
    named = run["approval"]  # an app change ships what serves now
    assert named["commit"] == project.head() and named["model_version"] == 2
    wrong = requests.post(
        f"{s.url}/api/runs/{run['id']}/approve", json={"model_version": 1}, headers=token, timeout=5
    )
    assert wrong.status_code == 409 and wrong.json()["error"] == "approval_mismatch"
    answer = requests.post(
        f"{s.url}/api/runs/{run['id']}/approve",
        json={"comment": "ship", "commit": named["commit"], "model_version": 2},
        headers=token,
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["approval"]["by"] == "ada" and answer.json()["approval"]["comment"] == "ship"
    done = wait_run(s, last, timeout=120)
    assert done["id"] == run["id"] and done["status"] == "succeeded", done
    assert done["stages"][-1]["status"] == "succeeded"
    current = requests.get(f"{s.url}/api/deployments/current", params={"model": "churn"}, timeout=5).json()
    assert current["deployment"]["run_id"] == run["id"]
    assert current["deployment"]["approval"]["model_version"] == current["model_version"]["version"] == 2
    releases = requests.get(f"{s.url}/api/models/churn", timeout=5).json()["releases"]
    assert [(r["version"], r["status"]) for r in releases] == [(2, "active"), (2, "standby")]  # v1 retired


def _runs(stack: Stack, after_id: int) -> dict[str, dict[str, Any]]:
    """The newest run of each trigger after ``after_id``."""
    runs = requests.get(f"{stack.url}/api/runs", params={"repo": "churn"}, timeout=5).json()["runs"]
    found: dict[str, dict[str, Any]] = {}
    for run in reversed(runs):
        if run["id"] > after_id:
            found[run["trigger"]] = run
    return found


def test_schedule_drift_and_performance_each_start_a_real_run(stack: tuple[Stack, Project, Path]) -> None:
    """Beat's trigger check on the live stack: drift from shifted traffic through the gateway (a
    retrain that goes as far as its approval, the reason in its lineage, one run per episode),
    feedback that the served answers were wrong, and a schedule catching up after downtime, each
    start a run that workers execute; the schedule's and performance's are cancelled once under way."""
    s, project, _lake = stack
    token = {"Authorization": "Bearer e2e-token", "X-Loopline-User": "ada"}
    last = requests.get(f"{s.url}/api/runs", timeout=5).json()["runs"][0]["id"]
    config = yaml.safe_load((project.work / "loopline.yml").read_text())
    config["triggers"] = {
        "schedule": {"cron": "* * * * *"},
        "drift": {"min_samples": 200, "sample_rate": 1.0, "window": 300, "cooldown": "1h"},
        "performance": {"min": 0.9, "window": 100, "cooldown": "1h"},
    }
    # the schedule last fired an hour ago (Loopline was down since): the first pass catches up once
    db = Database(s.settings.database_url)
    triggers.remember(db, "churn", "schedule", tick=utcnow() - timedelta(hours=1), reason="down for an hour")
    project.commit({"loopline.yml": yaml.safe_dump(config, sort_keys=False)}, "Retrain on triggers")
    project.push(env={"HOOK_SECRET": "e2e-secret"})
    pushed = wait_run(s, last, timeout=60, until={"queued", "running", "awaiting_approval", *TERMINAL})
    requests.post(f"{s.url}/api/runs/{pushed['id']}/cancel", headers=token, timeout=5)  # not the point here

    real = load_breast_cancer().data
    shifted = real[np.random.default_rng(5).permutation(len(real))]
    shifted[:, 0] *= 1.5  # mean radius grew by half
    bodies = [{"instances": shifted[i : i + 100].tolist()} for i in range(0, 500, 100)]
    answered: list[tuple[str, list[int]]] = []
    found: dict[str, dict[str, Any]] = {}
    cancelled: dict[str, str] = {}  # trigger → its run's reason
    deadline = time.monotonic() + 150
    with requests.Session() as http:
        while time.monotonic() < deadline:
            s.check()
            if "drift" not in found:  # beat sets the sample rate; the gateway rereads it every ~5 s
                body = bodies[len(answered) % len(bodies)]
                answer = http.post(f"{s.url}/serve/churn/predict", json=body, timeout=10)
                assert answer.ok, answer.text
                answered.append((answer.headers["X-Loopline-Request-Id"], answer.json()["predictions"]))
            if "performance" not in found and len(answered) >= 2:  # every answer was wrong, says the client
                truths = [{"request_id": rid, "labels": [1 - p for p in preds]} for rid, preds in answered]
                requests.post(f"{s.url}/api/models/churn/feedback", json={"feedback": truths}, timeout=5)
            found = _runs(s, pushed["id"])
            for trigger in ("schedule", "performance"):
                run = found.get(trigger)
                if (
                    run
                    and trigger not in cancelled
                    and any(st["status"] == "succeeded" for st in run["stages"])
                ):
                    assert run["status"] in ("running", "queued"), run  # under way, its stages ran
                    cancel = requests.post(f"{s.url}/api/runs/{run['id']}/cancel", headers=token, timeout=5)
                    assert cancel.ok, cancel.text
                    cancelled[trigger] = run["reason"]
            drift = found.get("drift")
            settled = drift is not None and drift["status"] in TERMINAL | {"awaiting_approval"}
            if settled and len(cancelled) == 2:
                break
            time.sleep(0.5)
    assert set(cancelled) == {"schedule", "performance"}, found
    assert (
        cancelled["schedule"].startswith("schedule '* * * * *': tick ")
        and "catch-up" in cancelled["schedule"]
    )
    assert cancelled["performance"].startswith("online accuracy of v2 fell to 0.000 < 0.9 over the last ")
    drift = found["drift"]
    assert drift["status"] == "awaiting_approval", drift
    reason = drift["reason"]
    assert "`mean radius` (PSI " in reason or "feature `mean radius` drifted, PSI " in reason, reason
    # a beat pass may come when two or three of the 100-instance requests are stored
    assert re.fullmatch(r"v2: .* over the last [23]00 sampled inputs", reason), reason
    trained = [st["status"] for st in drift["stages"] if st["name"] in ("retrain", "evaluate", "register")]
    assert trained == ["succeeded"] * 3
    lineage = requests.get(f"{s.url}/api/models/churn/versions/{drift['model_version']}", timeout=5).json()
    assert lineage["lineage"]["run"]["reason"] == reason
    assert lineage["lineage"]["deliveries"][0]["event"]["type"] == "drift"
    # the drift is still there and beat keeps checking: the episode started one run
    deadline = time.monotonic() + 30
    while (
        "(not fired: " not in (triggers.state(db, "churn", "drift").reason or "")
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert f"(not fired: run {drift['id']} is under way)" in (
        triggers.state(db, "churn", "drift").reason or ""
    )
    runs = requests.get(f"{s.url}/api/runs", timeout=5).json()["runs"]
    assert [r["trigger"] for r in runs].count("drift") == 1
    assert requests.post(f"{s.url}/api/runs/{drift['id']}/reject", headers=token, timeout=5).ok
    db.dispose()


def test_demo_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    env = outside_env()
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "loopline", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for heading in ("Runs", "Model versions", "Serving now: lineage", "demo finished"):
        assert heading in out
    assert out.index("✓ unit_tests") < out.index("✓ retrain") < out.index("✓ deploy")
    assert "GATE_FAILED  (stage evaluate gate failed)" in out and "gate: failed: accuracy=" in out
    assert "production still serves v2: nothing was registered or deployed" in out
    assert "approved by demo at " in out and ': "gate passed, metrics back to normal"' in out
    assert "v3 *" in out  # the approved version serves
    assert "production v3" in out and "standby" in out  # the alias, and v2 kept ready for a rollback
    assert "verdict: promote: error rate 0.0%" in out  # the retrain's canary trial, with traffic
    ledger = out[out.index("Data ledger") :]  # v3, pushed after the drop, still learned from it
    assert "churn v3 ← dataset v1" in ledger and "batch-001.csv (landed" in ledger
    assert "v3's artifact" in ledger and "differs from v1's" in ledger
    # clients' shifted inputs through the gateway started a retrain that names the drifted feature
    assert "5. the world changes" in out
    drifted = r"run #\d+ \[drift\]: v3: .*`mean radius`.* over the last [\d,]+ sampled inputs"
    assert re.search(drifted, out), out
    assert "[drift: -]  AWAITING_APPROVAL" in out
    assert "dashboard: http://127.0.0.1:" in out and "sign in as demo, an admin, with the token llu_" in out


def test_up_runs_everything_until_ctrl_c(tmp_path: Path) -> None:
    import signal

    env = outside_env()
    env.update(LOOPLINE_HOME=str(tmp_path / "home"), LOOPLINE_CONFIG=str(tmp_path / "none.yaml"))
    (tmp_path / "none.yaml").write_text("repositories: []\n")
    port = free_port()
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "loopline", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        try:
            # `up` has said it is up (its own readiness check passed): before that, a process
            # that exits is a failed start, not one to start again
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not any("Loopline is up at" in line for line in lines):
                assert proc.poll() is None, "".join(lines)
                time.sleep(0.2)
            assert (tmp_path / "home" / "redis.sock").exists()  # the embedded broker
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).raise_for_status()
            # The default worker's main process dies (as kombu makes it on a Redis restart): `up`
            # starts it again, and it becomes ready again.
            logs = tmp_path / "home" / "logs"
            worker = _worker_pid(proc.pid)
            os.kill(worker, signal.SIGKILL)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and (logs / "worker.log").read_text().count("ready.") < 2:
                time.sleep(0.2)
            assert (logs / "worker.log").read_text().count("ready.") == 2, "".join(lines)
            assert _worker_pid(proc.pid) != worker
            time.sleep(0.5)
        finally:  # stop it whole, children included, whatever failed above
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "Loopline is up at" in out and "stopping" in out
    assert f"worker exited with {-signal.SIGKILL}; starting it again in 2s" in out
    assert "worker started again (pid " in out
    assert not (tmp_path / "home" / "redis.sock").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def _worker_pid(parent: int) -> int:
    """The default Celery worker among ``parent``'s children (its main process)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"default@" in (stat.parent / "cmdline").read_bytes():
                return int(stat.parent.name)
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    raise AssertionError("no default worker running")
