"""Loopline across hosts without a shared filesystem: releases registered under a reachable
address."""

from __future__ import annotations

from pathlib import Path

import requests

from store.db import Database
from tests.conftest import ROOT
from tests.release_helpers import ROWS, constant_model, register
from workers import serving

TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled", "gate_failed"})
TOKEN = {"Authorization": "Bearer mh-token", "X-Loopline-User": "ada"}


def test_a_release_registered_under_another_address_listens_there(tmp_path: Path) -> None:
    """``LOOPLINE_SERVING_ADDRESS``: the URL names it and the server listens beyond 127.0.0.1."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    mv = register(db, tmp_path / "home", "m", 1, constant_model(1))
    server = serving.start(
        cwd=ROOT,
        command=None,
        model_path=Path(mv.artifact_path),
        sha256=mv.sha256,
        log_file=tmp_path / "server.log",
        address="127.0.0.2",
    )
    try:
        assert server.url.startswith("http://127.0.0.2:")
        answer = requests.post(f"{server.url}/predict", json={"instances": ROWS[:1]}, timeout=10)
        assert answer.json()["predictions"] == [1]
        assert serving.advertised("10.1.2.3") == "10.1.2.3"  # given as it is; "auto": this host's
    finally:
        serving.stop(server.pid)
        db.dispose()
