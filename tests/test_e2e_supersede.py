"""Supersession end to end: real pushes through the installed hook, the web process, Celery
workers on Redis. A newer push wins; an older one never deploys over it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from loopline.processes import Stack
from tests import test_e2e
from tests.conftest import Project

pytestmark = pytest.mark.e2e
stack = test_e2e.stack  # the same fixture: a bare repo with its hook, web, workers, Redis
SECRET = {"HOOK_SECRET": "e2e-secret"}
TOKEN = {"Authorization": "Bearer e2e-token", "X-Loopline-User": "ada"}
#: A unit test that holds its stage until it is stopped: the run is surely running then.
SLOW_TEST = "import time\n\n\ndef test_slow():\n    time.sleep(120)\n"


def runs_after(s: Stack, after: int) -> list[dict[str, Any]]:
    rows = requests.get(f"{s.url}/api/runs", params={"repo": "churn"}, timeout=5).json()["runs"]
    return sorted((r for r in rows if r["id"] > after), key=lambda r: r["id"])


def wait_for(s: Stack, what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.check()
        if found := check():
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; logs: {s.settings.home}/logs")


def run(s: Stack, run_id: int) -> dict[str, Any]:
    return requests.get(f"{s.url}/api/runs/{run_id}", timeout=5).json()


def current(s: Stack) -> dict[str, Any]:
    return requests.get(f"{s.url}/api/deployments/current", params={"model": "churn"}, timeout=5).json()


def last_id(s: Stack) -> int:
    rows = runs_after(s, 0)
    return rows[-1]["id"] if rows else 0


def test_the_first_push_deploys(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    project.push(env=SECRET)
    done = test_e2e.wait_run(s, 0)
    assert done["status"] == "succeeded", done


def unit_tests(record: dict[str, Any]) -> dict[str, Any]:
    """The run's unit_tests stage (the environment stage comes before it)."""
    return next(st for st in record["stages"] if st["name"] == "unit_tests")


def test_three_quick_pushes_complete_only_the_newest(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    last = last_id(s)
    one = project.commit({"tests/unit/test_slow.py": SLOW_TEST, "app/one.py": "ONE = 1\n"})
    project.push(env=SECRET)
    first = wait_for(
        s,
        "the first run's unit tests to run",
        lambda: next(
            (
                r
                for r in runs_after(s, last)
                if r["commit"] == one and unit_tests(run(s, r["id"]))["status"] == "running"
            ),
            None,
        ),
    )
    two = project.commit({"tests/unit/test_slow.py": SLOW_TEST + "# two\n", "app/two.py": "TWO = 2\n"})
    project.push(env=SECRET)
    three = project.commit(
        {"tests/unit/test_slow.py": "def test_fast():\n    pass\n", "app/three.py": "T = 3\n"}
    )
    project.push(env=SECRET)
    newest = wait_for(
        s,
        "the newest run to finish",
        lambda: next(
            (r for r in runs_after(s, last) if r["commit"] == three and r["status"] in test_e2e.TERMINAL),
            None,
        ),
        timeout=240,
    )
    assert newest["status"] == "succeeded", run(s, newest["id"])
    rows = {r["commit"]: run(s, r["id"]) for r in runs_after(s, last)}
    assert set(rows) == {one, two, three} and len(runs_after(s, last)) == 3
    assert rows[one]["status"] == rows[two]["status"] == "cancelled"
    assert rows[one]["reason"].startswith("superseded") and rows[two]["reason"].startswith("superseded")
    assert unit_tests(rows[one])["status"] == "cancelled"  # stopped mid-command (the log says so)
    log = requests.get(f"{s.url}/api/runs/{first['id']}/stages/unit_tests/log", timeout=5).text
    assert "[loopline] stopping the command: superseded by run" in log, log
    assert "[loopline] stage cancelled: superseded by run" in log
    # superseded before any work stage finished (its environment, a cache hit, may have)
    assert all(st["status"] != "succeeded" for st in rows[two]["stages"] if st["name"] != "environment")
    assert current(s)["deployment"]["run_id"] == newest["id"]


def test_a_replayed_older_delivery_deploys_nothing(stack: tuple[Stack, Project, Path]) -> None:
    s, _project, _lake = stack
    before = current(s)
    old = runs_after(s, 0)[-3]  # the first of the three quick pushes
    body = json.dumps(
        {"repository": "churn", "ref": "refs/heads/main", "before": old["before"], "after": old["commit"]}
    ).encode()
    mac = hmac.new(b"e2e-secret", body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Loopline-Delivery": str(uuid.uuid4()),  # a new id: the same push, delivered again
        "X-Loopline-Signature-256": f"sha256={mac}",
    }
    answer = requests.post(f"{s.url}/hooks/git", data=body, headers=headers, timeout=5)
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["event_id"]
    event = wait_for(
        s,
        "the replayed delivery to be processed",
        lambda: (
            (e := requests.get(f"{s.url}/api/events/{event_id}", timeout=5).json())["status"] == "processed"
            and e
        ),
    )
    assert len(event["run_ids"]) == 1
    replayed = run(s, event["run_ids"][0])
    assert replayed["status"] == "cancelled" and replayed["reason"].startswith("superseded by run")
    time.sleep(2)  # give a wrong deploy every chance to happen
    after = current(s)
    assert after["deployment"] == before["deployment"]
    served = requests.post(
        after["deployment"]["url"] + "/predict", json={"instances": [[14.0] * 30]}, timeout=5
    )
    assert served.json()["model_sha256"] == before["model_version"]["sha256"]


def test_approving_a_superseded_run_deploys_nothing(stack: tuple[Stack, Project, Path]) -> None:
    s, project, _lake = stack
    last = last_id(s)
    config = (project.work / "loopline.yml").read_text()
    older = project.commit(
        {"loopline.yml": config.replace("target: local,", "target: local, approval: required,")}
    )
    project.push(env=SECRET)
    waiting = wait_for(
        s,
        "the older run to wait for approval",
        lambda: next(
            (r for r in runs_after(s, last) if r["commit"] == older and r["status"] == "awaiting_approval"),
            None,
        ),
    )
    newer = project.commit({"app/four.py": "FOUR = 4\n"})
    project.push(env=SECRET)
    wait_for(s, "the older run to be superseded", lambda: run(s, waiting["id"])["status"] == "cancelled")
    refused = requests.post(f"{s.url}/api/runs/{waiting['id']}/approve", headers=TOKEN, timeout=5)
    assert refused.status_code == 409 and refused.json()["error"] == "invalid_state"
    assert run(s, waiting["id"])["stages"][-1]["status"] == "cancelled"  # its deploy never runs
    second = wait_for(
        s,
        "the newer run to wait for approval",
        lambda: next(
            (r for r in runs_after(s, last) if r["commit"] == newer and r["status"] == "awaiting_approval"),
            None,
        ),
    )
    assert requests.post(f"{s.url}/api/runs/{second['id']}/approve", headers=TOKEN, timeout=5).ok
    wait_for(s, "the newer run to deploy", lambda: run(s, second["id"])["status"] in test_e2e.TERMINAL)
    assert run(s, second["id"])["status"] == "succeeded"
    assert current(s)["deployment"]["run_id"] == second["id"]
