"""``POST /hooks/*`` over HTTP: the documented answers, and nothing stored for a rejected request."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipelines.config import RepoConfig
from service import create_app
from service.state import loopline
from store.models import Delivery
from tests.conftest import PAYLOADS, make_settings

SIGNED = (PAYLOADS / "github/push-modified-file-signed.json").read_bytes()
GITHUB = RepoConfig(name="hello", provider="github", match="Codertocat/Hello-World", url="/srv/hello.git")
GIT = RepoConfig(name="churn", provider="git", match="churn", url="/srv/churn.git")


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> FlaskClient:
    settings = make_settings(
        tmp_path,
        (GITHUB, GIT),
        db_url=db_url,
        secrets={"hello": b"topsecret", "churn": b"gitsecret"},
        max_body_bytes=1024 * 1024,
    )
    app = create_app({"settings": settings, "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def count(client: FlaskClient) -> int:
    with client.application.app_context(), loopline().db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery)) or 0)


def gh_headers(
    body: bytes, secret: bytes = b"topsecret", event: str = "push", delivery: str | None = None
) -> dict:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


def git_body(**overrides: str) -> bytes:
    data = {
        "repository": "churn",
        "ref": "refs/heads/main",
        "before": "a" * 40,
        "after": "b" * 40,
        **overrides,
    }
    return json.dumps(data).encode()


def git_headers(body: bytes, secret: bytes = b"gitsecret") -> dict:
    return {"X-Loopline-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


def test_published_signature_is_accepted_then_deduplicated(client: FlaskClient) -> None:
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "ee8d97b4-1479-43f1-9cac-fbbd1b80da55",
        "X-Hub-Signature-256": "sha256=e3bfe744d4e2e29ed990bde8acfb8255ca51ef65f99657767989fb6349f32957",
    }
    first = client.post("/hooks/github", data=SIGNED, headers=headers)
    assert first.status_code == 202 and first.json["status"] == "accepted"
    again = client.post("/hooks/github", data=SIGNED, headers=headers)
    assert again.status_code == 200 and again.json == {
        "event_id": first.json["event_id"],
        "status": "duplicate",
    }
    event = client.get(f"/api/events/{first.json['event_id']}").json
    assert event["provider"] == "github" and event["repository"] == "hello" and event["status"] == "pending"
    assert event["event"]["ref"] == "refs/heads/master" and event["classification"] is None
    assert count(client) == 1


def test_same_delivery_id_with_another_body_conflicts(client: FlaskClient) -> None:
    delivery = str(uuid.uuid4())
    assert (
        client.post("/hooks/github", data=SIGNED, headers=gh_headers(SIGNED, delivery=delivery)).status_code
        == 202
    )
    other = SIGNED.replace(b"Update README", b"Update READMX")
    answer = client.post("/hooks/github", data=other, headers=gh_headers(other, delivery=delivery))
    assert answer.status_code == 409 and answer.json["error"] == "delivery_conflict"
    assert count(client) == 1


def test_ping_gets_a_200(client: FlaskClient) -> None:
    body = (PAYLOADS / "github/ping.json").read_bytes()
    answer = client.post("/hooks/github", data=body, headers=gh_headers(body, event="ping"))
    assert (
        answer.status_code == 200 and answer.json["status"] == "ignored" and answer.json["reason"] == "ping"
    )
    assert count(client) == 0


def _flip(body: bytes) -> bytes:
    return body[:50] + bytes([body[50] ^ 1]) + body[51:]


HOSTILE = [
    # (name, path, body, headers-builder, status, error code)
    (
        "unsigned",
        "/hooks/github",
        SIGNED,
        lambda b: {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1"},
        401,
        "bad_signature",
    ),
    ("wrong secret", "/hooks/github", SIGNED, lambda b: gh_headers(b, b"nope"), 401, "bad_signature"),
    ("one byte changed", "/hooks/github", _flip(SIGNED), lambda b: gh_headers(SIGNED), 401, "bad_signature"),
    (
        "sha1 only",
        "/hooks/github",
        SIGNED,
        lambda b: {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "d3",
            "X-Hub-Signature": "sha1=cf93f9ba3c8d3a789e61f91e1e5c6a360d036e98",
        },
        401,
        "bad_signature",
    ),
    ("bad json", "/hooks/github", b"{not json", gh_headers, 400, "malformed_payload"),
    ("not utf-8", "/hooks/github", b'{"a": "\xff"}', gh_headers, 400, "malformed_payload"),
    ("deep nesting", "/hooks/github", b"[" * 50000 + b"]" * 50000, gh_headers, 400, "malformed_payload"),
    (
        "no event header",
        "/hooks/github",
        SIGNED,
        lambda b: {k: v for k, v in gh_headers(b).items() if k != "X-GitHub-Event"},
        400,
        "malformed_payload",
    ),
    (
        "no delivery header",
        "/hooks/github",
        SIGNED,
        lambda b: {k: v for k, v in gh_headers(b).items() if k != "X-GitHub-Delivery"},
        400,
        "malformed_payload",
    ),
    ("unknown provider", "/hooks/svn", SIGNED, gh_headers, 404, "unknown_provider"),
    (
        "unknown repository",
        "/hooks/git",
        git_body(repository="other"),
        git_headers,
        404,
        "unknown_repository",
    ),
    (
        "shell in ref",
        "/hooks/git",
        git_body(ref="refs/heads/$(reboot)"),
        git_headers,
        400,
        "malformed_payload",
    ),
    (
        "option as ref",
        "/hooks/git",
        git_body(ref="--upload-pack=evil"),
        git_headers,
        400,
        "malformed_payload",
    ),
    ("short sha", "/hooks/git", git_body(after="abc"), git_headers, 400, "malformed_payload"),
    ("git unsigned", "/hooks/git", git_body(), lambda b: {}, 401, "bad_signature"),
    ("too large", "/hooks/git", b"x" * (2 * 1024 * 1024), git_headers, 413, "request_entity_too_large"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_requests(
    client: FlaskClient, name: str, path: str, body: bytes, headers, status: int, code: str
) -> None:
    answer = client.post(path, data=body, headers=headers(body))
    assert answer.status_code == status, answer.json
    assert answer.json["error"] == code and answer.json["message"]
    assert count(client) == 0


def test_generic_git_delivery(client: FlaskClient) -> None:
    body = git_body()
    first = client.post("/hooks/git", data=body, headers=git_headers(body))
    assert first.status_code == 202
    # No delivery header: the body's hash is the id, so the same ref update is a duplicate.
    assert client.post("/hooks/git", data=body, headers=git_headers(body)).json["status"] == "duplicate"


def test_api_errors_are_json(client: FlaskClient) -> None:
    for url in ("/api/runs/999", "/api/events/nope", "/api/models/none/versions", "/nowhere"):
        answer = client.get(url)
        assert answer.status_code == 404 and answer.json["error"]
    assert client.get("/api/deployments/current").status_code == 400
    assert client.get("/api/runs?limit=x").json["error"] == "bad_parameter"
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/metrics").status_code == 200


def test_store_that_cannot_write_answers_503(client: FlaskClient) -> None:
    from sqlalchemy import text

    with client.application.app_context(), loopline().db.session() as s:
        s.execute(text("DROP TABLE deliveries"))
    body = git_body()
    answer = client.post("/hooks/git", data=body, headers=git_headers(body))
    assert answer.status_code == 503 and answer.json["error"] == "store_unavailable"
    assert "retry" in answer.json["message"]


def test_repository_without_a_secret_accepts_unsigned_deliveries(tmp_path: Path) -> None:
    app = create_app({"settings": make_settings(tmp_path, (GIT,)), "TESTING": True})
    client = app.test_client()
    assert client.post("/hooks/git", data=git_body(), headers={}).status_code == 202
    assert client.post("/hooks/git", data=git_body(repository="other")).status_code == 404
    with app.app_context():
        loopline().db.dispose()
