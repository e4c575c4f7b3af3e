"""The layers point one way and nothing imports in a circle: import-linter checks the contracts
in ``pyproject.toml`` ([tool.importlinter]) against the real import graph."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_every_registry_is_complete_and_they_agree() -> None:
    """Each extension point is one module plus one entry; everything that lists them derives
    from the registry, and this test names any piece missing."""
    from pipelines import config, plan, project, providers
    from service import storage
    from store.deliveries import DATA_PROVIDERS
    from tests import webhooks
    from workers.steps import registry
    from workers.steps.targets import targets

    # Git providers: the one list; the config, the routes and the tests' signed senders (the fuzz
    # tests run every host) follow it; a host with a status API maps every run status.
    assert config.PROVIDERS == tuple(providers.PROVIDERS)
    for name, host in providers.PROVIDERS.items():
        assert callable(host.verify) and callable(host.delivery_id) and callable(host.parse), name
        assert name in webhooks.SIGNATURE_HEADER and name in webhooks.DELIVERY_HEADER, name
        if host.status is not None:
            run_statuses = {"queued", "running", "awaiting_approval", "succeeded", "skipped"}
            run_statuses |= {"failed", "gate_failed", "cancelled"}
            assert set(host.status.states) == run_statuses, name
            assert name in config.STATUS_PROVIDERS
    # Storage senders: each lake kind outside a drop folder has a sender of its own name.
    assert all(
        callable(sender.parse) and isinstance(sender.HANDSHAKE, bool) for sender in storage.PARSERS.values()
    )
    lake_kinds = tuple(f.name for f in dataclasses.fields(config.DataLakeEntry))
    assert DATA_PROVIDERS == lake_kinds and set(lake_kinds) - {"folder"} <= set(storage.PARSERS)
    # Stages: the planner's order and the workers' steps name the same stages; each stage with
    # a command in loopline.yml is one of them.
    assert set(registry()) == set(plan.CANONICAL)
    assert set(project.DEFAULT_STAGES) <= set(plan.CANONICAL)
    # Deploy targets: what loopline.yml may name is what the workers can ship.
    assert set(targets()) == set(project.DEPLOY_TARGETS)


def test_every_name_the_relay_publishes_is_a_task() -> None:
    """The relay publishes by task name (it does not import the tasks): each name it can send
    must be a task the workers registered, on the queue the planner gives its stage."""
    from pipelines.plan import CANONICAL
    from workers import publish, tasks

    sent = {publish.INTAKE, publish.PREPARE, publish.COMMIT_STATUS, publish.REPRODUCE, publish.STAGE}
    sent |= {publish.stage_task(stage) for stage in CANONICAL}
    assert sent <= set(tasks.app.tasks)
    assert publish.stage_task("no-such-stage") == publish.STAGE
