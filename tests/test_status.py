"""Commit statuses, sent to a local HTTP server that stands in for each Git host and checks the
request shape that host documents (path, auth header, JSON fields and allowed values)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from pipelines.config import ConfigError, RepoConfig, StatusConfig, parse_server_config
from store.db import Database
from store.models import Run
from store.schedule import Due
from tests.conftest import make_settings
from workers import status
from workers.relay import relay_once

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "tok-s3cret-value"

#: What each host documents: path, auth header, required and allowed body fields, states.
HOSTS: dict[str, dict[str, Any]] = {
    "github": {
        "path": f"/repos/acme/churn-model/statuses/{SHA}",
        "auth": ("Authorization", f"Bearer {TOKEN}"),
        "required": {"state"},
        "allowed": {"state", "target_url", "description", "context"},
        "states": {"pending", "success", "failure", "error"},
    },
    "gitlab": {
        "path": f"/projects/acme%2Fml%2Fchurn-model/statuses/{SHA}",
        "auth": ("PRIVATE-TOKEN", TOKEN),
        "required": {"state"},
        "allowed": {
            "state",
            "ref",
            "name",
            "context",
            "target_url",
            "description",
            "coverage",
            "pipeline_id",
        },
        "states": {"pending", "running", "success", "failed", "canceled", "skipped"},
    },
    "gitea": {
        "path": f"/repos/acme/churn-model/statuses/{SHA}",
        "auth": ("Authorization", f"token {TOKEN}"),
        "required": {"state"},
        "allowed": {"state", "target_url", "description", "context"},
        "states": {"pending", "success", "error", "failure", "warning"},
    },
    "forgejo": {
        "path": f"/repos/acme/churn-model/statuses/{SHA}",
        "auth": ("Authorization", f"token {TOKEN}"),
        "required": {"state"},
        "allowed": {"state", "target_url", "description", "context"},
        "states": {"pending", "success", "error", "failure", "warning"},
    },
    "bitbucket": {
        "path": f"/repositories/acme/churn-model/commit/{SHA}/statuses/build",
        "auth": ("Authorization", f"Bearer {TOKEN}"),
        "required": {"key", "state", "url"},
        "allowed": {"key", "state", "url", "name", "description", "refname"},
        "states": {"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"},
    },
}
EXPECTED = {  # run status → state, per host
    "github": {"queued": "pending", "running": "pending", "succeeded": "success", "skipped": "success",
               "failed": "failure", "gate_failed": "failure", "cancelled": "error"},
    "gitlab": {"queued": "pending", "running": "running", "succeeded": "success", "skipped": "success",
               "failed": "failed", "gate_failed": "failed", "cancelled": "canceled"},
    "bitbucket": {"queued": "INPROGRESS", "running": "INPROGRESS", "succeeded": "SUCCESSFUL",
                  "skipped": "SUCCESSFUL", "failed": "FAILED", "gate_failed": "FAILED",
                  "cancelled": "STOPPED"},
}  # fmt: skip
EXPECTED["gitea"] = EXPECTED["forgejo"] = EXPECTED["github"]


@dataclass
class Host:
    """A fake Git host API: records every request, answers with the scripted codes (then 201)."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)


@pytest.fixture
def host() -> Iterator[Host]:
    state = Host(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "json": json.loads(raw)}
            )
            code = state.script.pop(0) if state.script else 201
            body = b'{"message": "nope"}' if code >= 400 else b'{"id": 1}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def settings_for(tmp_path: Path, db: Database, provider: str, api_url: str) -> Settings:
    path = "acme/ml/churn-model" if provider == "gitlab" else "acme/churn-model"
    repo = RepoConfig(
        name="churn",
        provider=provider,
        match=path,
        url="/nowhere.git",
        status=StatusConfig(
            provider=provider, api_url=api_url, token_env="CHURN_STATUS_TOKEN", repository=path
        ),
    )
    return make_settings(tmp_path, (repo,), db_url=db.url, public_url="https://ci.example.com")


def add_run(db: Database, status_: str, reason: str | None = None, ref: str = "refs/heads/main") -> int:
    with db.session() as s:
        run = Run(
            repository="churn", ref=ref, commit=SHA, trigger="push", status=status_, reason=reason,
            dedupe_key=f"k-{status_}-{reason}-{ref}",
        )  # fmt: skip
        s.add(run)
        s.flush()
        return run.id


def check_shape(provider: str, request: dict[str, Any]) -> dict[str, Any]:
    """The request is what the host documents: its path, auth header and JSON fields."""
    spec = HOSTS[provider]
    assert request["path"] == spec["path"]
    header, value = spec["auth"]
    assert request["headers"][header] == value
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert spec["required"] <= set(body) <= spec["allowed"], body
    assert body["state"] in spec["states"]
    assert len(body["description"]) <= 140
    return body


@pytest.mark.parametrize("provider", list(HOSTS))
def test_each_run_status_is_reported_in_the_hosts_shape(
    provider: str, host: Host, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_STATUS_TOKEN", TOKEN)
    settings = settings_for(tmp_path, db, provider, host.url)
    for run_status, state in EXPECTED[provider].items():
        run_id = add_run(db, run_status, reason="superseded by run 9" if run_status == "cancelled" else None)
        assert status.report(settings, db, run_id) is True
        body = check_shape(provider, host.requests[-1])
        assert body["state"] == state, (run_status, body)
        link = body.get("target_url") or body.get("url")
        assert link == f"https://ci.example.com/#run={run_id}"
        name = body.get("context") or body.get("name") if provider != "bitbucket" else body["key"]
        assert name == "loopline"
        if run_status == "cancelled":
            assert body["description"].endswith("cancelled: superseded by run 9")
    if provider == "gitlab":
        assert host.requests[-1]["json"]["ref"] == "main"
    if provider == "bitbucket":
        assert host.requests[-1]["json"]["refname"] == "main"


def test_a_skipped_docs_only_run_reports_success(
    host: Host, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_STATUS_TOKEN", TOKEN)
    settings = settings_for(tmp_path, db, "github", host.url)
    run_id = add_run(db, "skipped", reason="only ignored files changed (docs/overview.md)")
    assert status.report(settings, db, run_id)
    body = check_shape("github", host.requests[0])
    assert body["state"] == "success" and "skipped: only ignored files changed" in body["description"]


def test_server_errors_are_retried_with_backoff(
    host: Host, tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_STATUS_TOKEN", TOKEN)
    monkeypatch.setattr(status, "BACKOFF", 0.01)
    settings = settings_for(tmp_path, db, "gitlab", host.url)
    run_id = add_run(db, "running")
    host.script = [500, 502]
    assert status.report(settings, db, run_id) is True
    assert len(host.requests) == 3 and host.requests[0]["json"] == host.requests[2]["json"]
    host.script = [503, 503, 503]  # never more than ATTEMPTS, then give up (logged)
    assert status.report(settings, db, run_id) is False
    assert len(host.requests) == 3 + status.ATTEMPTS


def test_client_errors_are_not_retried_and_the_token_is_never_logged(
    host: Host,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CHURN_STATUS_TOKEN", TOKEN)
    settings = settings_for(tmp_path, db, "bitbucket", host.url)
    run_id = add_run(db, "failed")
    host.script = [401]
    with caplog.at_level(logging.DEBUG):
        assert status.report(settings, db, run_id) is False
    assert len(host.requests) == 1
    assert "refused 401" in caplog.text and TOKEN not in caplog.text


def test_an_unreachable_host_never_fails_anything(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    monkeypatch.setenv("CHURN_STATUS_TOKEN", TOKEN)
    monkeypatch.setattr(status, "BACKOFF", 0.01)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_for(tmp_path, db, "github", f"http://127.0.0.1:{port}")
    run_id = add_run(db, "succeeded")
    with caplog.at_level(logging.WARNING):
        assert status.report(settings, db, run_id) is False
    assert caplog.text.count("ConnectionError") == status.ATTEMPTS and TOKEN not in caplog.text
    monkeypatch.delenv("CHURN_STATUS_TOKEN")
    assert status.report(settings, db, run_id) is False
    assert "CHURN_STATUS_TOKEN is not set" in caplog.text


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def intake(self, delivery_ids: list[str]) -> None: ...

    def stage(self, due: Due) -> None: ...

    def prepare(self, run_id: int) -> None: ...

    def commit_status(self, run_id: int) -> None:
        self.statuses.append(run_id)


def test_the_relay_asks_once_per_status_change(tmp_path: Path, db: Database) -> None:
    settings = settings_for(tmp_path, db, "github", "https://api.github.com")
    run_id = add_run(db, "queued")
    recorder = Recorder()
    relay_once(settings, db, recorder)
    relay_once(settings, db, recorder)
    assert recorder.statuses == [run_id]  # once, not every pass
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status = "succeeded"
    relay_once(settings, db, recorder)
    assert recorder.statuses == [run_id, run_id]
    quiet = make_settings(tmp_path, (RepoConfig(name="churn", provider="git", match="churn", url="/x"),))
    add_run(db, "queued", ref="refs/heads/other")
    relay_once(quiet, db, recorder)  # a repository without a status config: nothing is sent
    assert recorder.statuses == [run_id, run_id]


def test_status_config_defaults_and_errors() -> None:
    def parse(status_: object, provider: str = "github") -> StatusConfig | None:
        raw = {"name": "churn", "provider": provider, "match": "acme/churn", "url": "/x", "status": status_}
        return parse_server_config({"repositories": [raw]})[0].status

    assert parse({"token_env": "T"}) == StatusConfig("github", "https://api.github.com", "T", "acme/churn")
    assert parse({"token_env": "T"}, "gitlab").api_url == "https://gitlab.com/api/v4"  # type: ignore[union-attr]
    assert parse({"token_env": "T"}, "bitbucket").api_url == "https://api.bitbucket.org/2.0"  # type: ignore[union-attr]
    generic = parse(
        {"token_env": "T", "provider": "gitea", "api_url": "https://git.example.com/api/v1/"}, "git"
    )
    assert generic == StatusConfig("gitea", "https://git.example.com/api/v1", "T", "acme/churn")
    for bad, key in [
        ({"token_env": "T"}, "api_url"),  # gitea has no public default
        ({"api_url": "https://x"}, "token_env"),
        ({"token_env": "T", "api_url": "ftp://x"}, "api_url"),
        ({"token_env": "T", "api_url": "https://x", "color": 1}, "color"),
        ({"token_env": "T", "api_url": "https://x", "context": "c" * 41}, "context"),
        ({"token_env": "T", "api_url": "https://x", "repository": "flat"}, "repository"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse(bad, "gitea")
        assert err.value.key == f"repositories[0].status.{key}"
    with pytest.raises(ConfigError):
        parse({"token_env": "T"}, "git")  # the generic provider has no status API of its own
