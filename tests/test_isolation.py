"""Pipeline code is untrusted (SPEC §7): a unit test pushed to the repository goes looking for
Loopline's secrets and state, through the real runner, in the project's own environment.

A process standing in for a Celery worker holds every Loopline secret in its environment (as
read from ``/proc/<pid>/environ``, which is where the attack found them); the pushed test reads
every ``/proc/*/environ`` it can and walks the whole test directory (``LOOPLINE_HOME``, the
database, the mirrors, the other repository's clone). Its assertions are the verdict: the run
succeeds only if it found nothing. Mapped secrets reach only their own repository's stages and
are masked in the stored logs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from pipelines.config import PipelineSecret
from pipelines.events import Event
from store.db import Database
from store.deliveries import record_delivery
from tests.conftest import Project, make_settings
from tests.test_intake import run_of
from workers import runner, sandbox
from workers.intake import prepare_run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.skipif(sandbox.mode() != "bwrap", reason="needs bubblewrap: " + sandbox.describe()),
]
LOOPLINE_SECRETS = {
    "LOOPLINE_API_TOKEN": "api-token-5ecr3t",
    "LOOPLINE_EVENT_TOKEN": "event-token-5ecr3t",
    "CHURN_HOOK_SECRET": "webhook-5ecr3t",
    "CHURN_AWS_KEY": "aws-key-5ecr3t",  # mapped to churn's stages only, as AWS_ACCESS_KEY_ID
}

SPY = """
import os

SECRETS = {secrets!r}
TOP = {top!r}


def test_no_process_environment_holds_a_loopline_secret():
    environs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                environs.append(open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError:
                pass
    assert environs  # its own, at least
    leaked = [s for s in SECRETS if any(s.encode() in env for env in environs)]
    assert leaked == []


def test_no_state_file_is_readable():
    own = os.getcwd()
    readable = []
    for root, dirs, files in os.walk(TOP):
        for name in files:
            path = os.path.join(root, name)
            if path.startswith(own + "/"):
                continue  # its own worktree
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
                readable.append(path)
            except OSError:
                pass
    assert readable == []


def test_the_mapped_secret_and_only_it():
    print("AWS_ACCESS_KEY_ID =", os.environ.get("AWS_ACCESS_KEY_ID"))
    assert not any(name.startswith("LOOPLINE_") for name in os.environ if name != "LOOPLINE_SERVE_URL")
"""


@pytest.fixture
def worker_with_secrets(tmp_path: Path) -> Iterator[None]:
    """A long-lived process started with Loopline's secrets in its environment, like a worker."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={"PATH": "/usr/bin:/bin", **LOOPLINE_SECRETS},
    )
    yield
    proc.kill()
    proc.wait()


def push_spy(project: Project, tmp_path: Path) -> str:
    """Push the project, then a commit adding the spy; the commit before it."""
    project.push()
    before = project.head()
    own = sorted(
        v for k, v in LOOPLINE_SECRETS.items() if k != "CHURN_AWS_KEY"
    )  # churn's stages get that one
    spy = SPY.format(secrets=own, top=str(tmp_path))
    config = (project.work / "loopline.yml").read_text()
    project.commit(
        {
            "tests/unit/test_spy.py": textwrap.dedent(spy),
            "loopline.yml": config.replace(
                'unit_tests: "pytest -q tests/unit"', 'unit_tests: "pytest -q -s tests/unit"'
            ),
        },
        "a unit test that looks around",
    )
    project.push()
    return before


def run_unit_tests(
    settings: Settings, db: Database, project: Project, repo: str, before: str
) -> tuple[str, str, str]:
    after = project.head()
    event = Event(type="push", repository=repo, ref="refs/heads/main", before=before, after=after)
    delivery = record_delivery(
        db, provider="git", delivery_id=f"{repo}:{after}", body=after.encode(), repository=repo, event=event
    ).event_id
    prepared = prepare_run(settings, db, [delivery])
    assert prepared.run_id is not None and prepared.stages[:2] == ("environment", "unit_tests")
    statuses = [runner.execute(settings, db, prepared.run_id, name) for name in prepared.stages[:2]]
    run = run_of(db, prepared.run_id)
    assert statuses[0] == "succeeded", run.stages[0].log
    return statuses[1], run.stages[1].log or "", run.stages[0].log or ""


def test_a_pushed_test_finds_no_secret_and_no_state_and_mapped_secrets_stay_with_their_repository(
    tmp_path: Path, db: Database, worker_with_secrets: None
) -> None:
    churn, other = Project(tmp_path / "churn"), Project(tmp_path / "other")
    before = {name: push_spy(project, tmp_path) for name, project in (("churn", churn), ("other", other))}
    settings = make_settings(
        tmp_path,
        (
            churn.repo_config(secrets={"AWS_ACCESS_KEY_ID": PipelineSecret(env="CHURN_AWS_KEY")}),
            other.repo_config("other"),
        ),
        db_url=db.url,
        api_token=LOOPLINE_SECRETS["LOOPLINE_API_TOKEN"],
        event_token=LOOPLINE_SECRETS["LOOPLINE_EVENT_TOKEN"],
        secrets={"churn": LOOPLINE_SECRETS["CHURN_HOOK_SECRET"].encode()},
        pipeline_secrets={"churn": {"AWS_ACCESS_KEY_ID": LOOPLINE_SECRETS["CHURN_AWS_KEY"]}},
    )
    (settings.home / "secrets.txt").parent.mkdir(parents=True, exist_ok=True)
    (settings.home / "secrets.txt").write_text(" ".join(LOOPLINE_SECRETS.values()))  # a state file

    status, log, environment_log = run_unit_tests(settings, db, churn, "churn", before["churn"])
    assert status == "succeeded", log
    assert "passed" in log and "failed" not in log
    assert "AWS_ACCESS_KEY_ID = ***" in log  # it got the value; the stored log shows ***
    assert not any(value in log for value in LOOPLINE_SECRETS.values())
    assert "sandbox: bwrap" in environment_log

    status, log, _ = run_unit_tests(settings, db, other, "other", before["other"])
    assert status == "succeeded", log
    assert "AWS_ACCESS_KEY_ID = None" in log  # another repository's secret never reaches it
