"""Notifications against a local recording HTTP server: formats, retries, no secret in a body."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config.settings import Settings
from pipelines.config import NotifyTarget, RepoConfig
from store.db import Database
from store.models import Run
from tests.conftest import make_settings
from workers import notify
from workers.tasks import send_notice

SECRET_PATH = "/services/T000/B000/XXXXsecretXXXX"


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[tuple[str, dict[str, object]]] = []
        self.answers: list[int] = []  # statuses to answer, in order; then 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SECRET_PATH}"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HOOK_URL", server.url)
    yield server
    server.shutdown()
    server.server_close()


def settings_with(tmp_path: Path, db_url: str, *targets: NotifyTarget) -> Settings:
    repo = RepoConfig(name="churn", provider="git", match="churn", url="/nowhere", notify=targets)
    quiet = RepoConfig(name="other", provider="git", match="other", url="/nowhere")
    return make_settings(tmp_path, (repo, quiet), db_url=db_url, public_url="https://ci.example")


def add_run(db: Database, repository: str, status: str, reason: str | None = None) -> int:
    with db.session() as s:
        run = Run(
            repository=repository,
            ref="refs/heads/main",
            commit="c" * 40,
            trigger="drift",
            status=status,
            reason=reason,
            dedupe_key=f"{repository}-{status}-{reason}",
        )
        s.add(run)
        s.flush()
        return run.id


def test_each_run_status_worth_a_notice_is_announced_once(tmp_path: Path, db: Database) -> None:
    settings = settings_with(tmp_path, db.url, NotifyTarget(url_env="HOOK_URL"))
    waiting = add_run(db, "churn", "awaiting_approval")
    failed = add_run(db, "churn", "gate_failed", "accuracy 0.71 < min 0.8")
    add_run(db, "churn", "running")
    add_run(db, "other", "failed")  # no target for this repository
    due = notify.due(settings, db)
    assert {(n.event, n.detail["run"]["id"]) for n in due} == {  # type: ignore[index]
        ("run.awaiting_approval", waiting),
        ("run.gate_failed", failed),
    }
    gated = next(n for n in due if n.event == "run.gate_failed")
    assert gated.text == (
        f"Loopline: churn run #{failed} (drift, main) was stopped by its evaluation gate: "
        f"accuracy 0.71 < min 0.8 <https://ci.example/#run={failed}>"
    )
    assert notify.due(settings, db) == []  # claimed: never twice
    with db.session() as s:
        run = s.get(Run, waiting)
        assert run is not None
        run.status = "failed"
    [again] = notify.due(settings, db)
    assert again.event == "run.failed" and again.detail["run"]["id"] == waiting  # type: ignore[index]


def test_json_and_slack_bodies_carry_no_secret(receiver: Recorder, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="https://ci.example")
    notice = notify.trigger_notice(settings, "churn", "drift", "feature `mean radius` drifted", "e" * 32)
    for form in ("json", "slack"):
        target = NotifyTarget(url_env="HOOK_URL", format=form)
        # what a task carries is the variable's name, never the URL
        assert receiver.url not in json.dumps([dataclasses.asdict(target), dataclasses.asdict(notice)])
        send_notice.apply(args=[dataclasses.asdict(target), dataclasses.asdict(notice)]).get()
    (path, generic), (_, slack) = receiver.received
    assert path == SECRET_PATH
    assert generic["event"] == "trigger.fired" and generic["trigger"] == "drift"
    assert generic["url"] == f"https://ci.example/api/events/{'e' * 32}"
    assert slack == {"text": notice.text} and "`mean radius` drifted" in notice.text
    assert all("secret" not in json.dumps(body) for _, body in receiver.received)


def test_a_receiver_that_fails_is_retried_with_backoff(receiver: Recorder, tmp_path: Path) -> None:
    notice = notify.trigger_notice(make_settings(tmp_path), "churn", "schedule", "tick", "e" * 32)
    target = NotifyTarget(url_env="HOOK_URL")
    receiver.answers = [503, 502]
    notify.send(target, notice, backoff=0.01)
    assert len(receiver.received) == 3  # two failures, then delivered
    receiver.answers = [503] * 10
    with pytest.raises(notify.NotifyFailed) as caught:  # the task's autoretry takes it from here
        notify.send(target, notice, attempts=2, backoff=0.01)
    assert "HOOK_URL: answered 503" in str(caught.value) and "secret" not in str(caught.value)
    receiver.received.clear()
    receiver.answers = [400]
    notify.send(target, notice, backoff=0.01)  # refused: logged, not retried
    assert len(receiver.received) == 1


def test_the_server_wide_target_and_the_on_filter(tmp_path: Path, db_url: str) -> None:
    only_triggers = NotifyTarget(url_env="HOOK_URL", on=("trigger",))
    settings = dataclasses.replace(
        settings_with(tmp_path, db_url, only_triggers), notify_url="http://x.invalid", notify_format="slack"
    )
    fired = notify.trigger_notice(settings, "churn", "volume", "10,000 new rows", "e" * 32)
    assert [t.url_env for t in notify.wanted(settings, fired)] == ["HOOK_URL", "LOOPLINE_NOTIFY_URL"]
    failed = notify.Notice("run.failed", "other", "x", {})
    assert notify.wanted(settings, failed) == [NotifyTarget(url_env="LOOPLINE_NOTIFY_URL", format="slack")]
