"""``POST /hooks/*`` over HTTP: the documented answers, and nothing stored for a rejected request."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipelines.config import RepoConfig
from service import create_app
from service.state import loopline
from store.models import Delivery, Run
from tests.conftest import PAYLOADS, fresh_database, make_settings
from tests.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, headers_for, signature

SIGNED = (PAYLOADS / "github/push-modified-file-signed.json").read_bytes()
GITHUB = RepoConfig(name="hello", provider="github", match="Codertocat/Hello-World", url="/srv/hello.git")
GIT = RepoConfig(name="churn", provider="git", match="churn", url="/srv/churn.git")
#: One registered repository per provider, matching the recorded body used for it below.
SAMPLES = {
    "github": "github/push-modified-file-signed.json",
    "gitlab": "gitlab/push-hook-docs.json",
    "gitea": "gitea/push-modified-readme.json",
    "forgejo": "gitea/push-modified-readme.json",
    "bitbucket": "bitbucket/repo-push-branch-updated.json",
}
REPOS = (
    GITHUB,
    GIT,
    RepoConfig(name="diaspora", provider="gitlab", match="mike/diaspora", url="/srv/d.git"),
    RepoConfig(name="hello-gitea", provider="gitea", match="gogits/hello-world", url="/srv/h.git"),
    RepoConfig(name="hello-forgejo", provider="forgejo", match="gogits/hello-world", url="/srv/h.git"),
    RepoConfig(name="foo", provider="bitbucket", match="brydzewski/foo", url="/srv/foo.git"),
)
SECRETS = {r.name: b"gitsecret" if r.provider == "git" else b"topsecret" for r in REPOS}
LIMIT = 1024 * 1024


def secret_of(provider: str) -> bytes:
    return b"gitsecret" if provider == "git" else b"topsecret"


def app_for(tmp_path: Path, db_url: str, repos: tuple[RepoConfig, ...] = REPOS) -> FlaskClient:
    settings = make_settings(
        tmp_path, repos, db_url=db_url, secrets={r.name: SECRETS[r.name] for r in repos}, max_body_bytes=LIMIT
    )
    return create_app({"settings": settings, "TESTING": True}).test_client()


def dispose(client: FlaskClient) -> None:
    with client.application.app_context():
        loopline().db.dispose()


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    made = app_for(tmp_path, db_url)
    yield made
    dispose(made)


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


def test_ping_gets_a_200(client: FlaskClient) -> None:
    body = (PAYLOADS / "github/ping.json").read_bytes()
    answer = client.post("/hooks/github", data=body, headers=gh_headers(body, event="ping"))
    assert (
        answer.status_code == 200 and answer.json["status"] == "ignored" and answer.json["reason"] == "ping"
    )
    assert count(client) == 0


# --- The hostile table -------------------------------------------------------------------------


def sample(provider: str) -> bytes:
    return (PAYLOADS / SAMPLES[provider]).read_bytes()


def variant(provider: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The provider's sample body with ``change`` applied (re-serialized, then signed anew)."""
    data = json.loads(sample(provider))
    change(data)
    return json.dumps(data).encode()


def setting(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update(values)


def bb_change(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["push"]["changes"][0].update(values)


def bb_new_hash(value: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["push"]["changes"][0]["new"]["target"].update(hash=value)


def signed(provider: str, changes: dict[str, str | None] | None = None, over: bytes | None = None):
    """Headers ``provider`` would send, signed over ``over`` (default: the body sent), with
    ``changes`` applied (``None`` removes a header)."""

    def build(body: bytes) -> dict[str, str]:
        made = headers_for(provider, over if over is not None else body, secret_of(provider))
        made.update(changes or {})
        return {k: v for k, v in made.items() if v is not None}

    return build


def flip(body: bytes) -> bytes:
    return body[:50] + bytes([body[50] ^ 1]) + body[51:]


def signature_for(provider: str, body: bytes) -> str:
    return signature(provider, body, secret_of(provider))


@dataclass(frozen=True)
class Hostile:
    name: str
    provider: str
    body: bytes
    headers: Callable[[bytes], dict[str, str]]
    status: int
    #: The JSON error code, or "ignored" for a 200 ignored answer.
    code: str
    #: A delivery sent (and stored) first: (body, headers).
    prior: tuple[bytes, dict[str, str]] | None = field(default=None)


def _dup(provider: str, delivery: str) -> tuple[bytes, dict[str, str]]:
    body = sample(provider)
    return body, headers_for(provider, body, secret_of(provider), delivery=delivery)


DEEP = b"[" * 50000 + b"]" * 50000
GH, GL, GT, FJ, BB = "github", "gitlab", "gitea", "forgejo", "bitbucket"
SIG, BAD = 401, "bad_signature"
MAL = "malformed_payload"
HOSTILE = [
    # --- signatures and tokens
    Hostile("github unsigned", GH, SIGNED, signed(GH, {SIGNATURE_HEADER[GH]: None}), SIG, BAD),
    Hostile("github wrong secret", GH, SIGNED, lambda b: gh_headers(b, b"nope"), SIG, BAD),
    Hostile("github one byte changed", GH, flip(SIGNED), signed(GH, over=SIGNED), SIG, BAD),
    Hostile(
        "github re-serialized", GH, json.dumps(json.loads(SIGNED)).encode(), signed(GH, over=SIGNED), SIG, BAD
    ),
    Hostile(
        "github sha1 alone",
        GH,
        SIGNED,
        signed(
            GH,
            {"X-Hub-Signature-256": None, "X-Hub-Signature": "sha1=cf93f9ba3c8d3a789e61f91e1e5c6a360d036e98"},
        ),
        SIG,
        BAD,
    ),
    Hostile(
        "github malformed signature", GH, SIGNED, signed(GH, {SIGNATURE_HEADER[GH]: "sha256=zz"}), SIG, BAD
    ),
    Hostile("gitlab no token", GL, sample(GL), signed(GL, {"X-Gitlab-Token": None}), SIG, BAD),
    Hostile("gitlab wrong token", GL, sample(GL), signed(GL, {"X-Gitlab-Token": "topsecreT"}), SIG, BAD),
    Hostile(
        "gitea body secret only",
        GT,
        variant(GT, setting(secret="topsecret")),
        signed(GT, {SIGNATURE_HEADER[GT]: None}),
        SIG,
        BAD,
    ),
    Hostile(
        "gitea github-style header only",
        GT,
        sample(GT),
        lambda b: {
            **signed(GT, {SIGNATURE_HEADER[GT]: None})(b),
            "X-Hub-Signature-256": signature_for(GH, b),
        },
        SIG,
        BAD,
    ),
    Hostile(
        "gitea prefixed signature",
        GT,
        sample(GT),
        lambda b: {**signed(GT)(b), "X-Gitea-Signature": "sha256=" + signature_for(GT, b)},
        SIG,
        BAD,
    ),
    Hostile(
        "forgejo gitea signature only",
        FJ,
        sample(FJ),
        lambda b: {**signed(FJ, {SIGNATURE_HEADER[FJ]: None})(b), "X-Gitea-Signature": signature_for(GT, b)},
        SIG,
        BAD,
    ),
    Hostile(
        "bitbucket unprefixed signature",
        BB,
        sample(BB),
        lambda b: {**signed(BB)(b), "X-Hub-Signature": signature_for(GT, b)},
        SIG,
        BAD,
    ),
    Hostile("bitbucket one byte changed", BB, flip(sample(BB)), signed(BB, over=sample(BB)), SIG, BAD),
    Hostile("git unsigned", "git", git_body(), lambda b: {}, SIG, BAD),
    # --- bodies
    Hostile("github bad json", GH, b"{not json", signed(GH), 400, MAL),
    Hostile("github not utf-8", GH, b'{"a": "\xff"}', signed(GH), 400, MAL),
    Hostile("github deep nesting", GH, DEEP, signed(GH), 400, MAL),
    Hostile("gitlab deep object nesting", GL, b'{"a":' * 50000 + b"1" + b"}" * 50000, signed(GL), 400, MAL),
    Hostile("bitbucket 100000-digit number", BB, b'{"push": ' + b"7" * 100000 + b"}", signed(BB), 400, MAL),
    Hostile("git 900 kB ref", "git", git_body(ref="refs/heads/" + "a" * 900_000), git_headers, 400, MAL),
    Hostile("gitea JSON array", GT, b"[]", signed(GT), 400, MAL),
    Hostile("git too large", "git", b"x" * (2 * LIMIT), git_headers, 413, "request_entity_too_large"),
    # --- headers
    Hostile("github no event header", GH, SIGNED, signed(GH, {EVENT_HEADER[GH]: None}), 400, MAL),
    Hostile("github no delivery header", GH, SIGNED, signed(GH, {DELIVERY_HEADER[GH]: None}), 400, MAL),
    Hostile("gitlab no delivery headers", GL, sample(GL), signed(GL, {"Idempotency-Key": None}), 400, MAL),
    Hostile("gitea no event header", GT, sample(GT), signed(GT, {EVENT_HEADER[GT]: None}), 400, MAL),
    Hostile("forgejo no delivery header", FJ, sample(FJ), signed(FJ, {DELIVERY_HEADER[FJ]: None}), 400, MAL),
    Hostile("bitbucket no event key", BB, sample(BB), signed(BB, {EVENT_HEADER[BB]: None}), 400, MAL),
    Hostile(
        "bitbucket delivery id of 200 chars",
        BB,
        sample(BB),
        signed(BB, {DELIVERY_HEADER[BB]: "u" * 200}),
        400,
        MAL,
    ),
    # --- refs and SHAs
    Hostile("git option as ref", "git", git_body(ref="refs/heads/--upload-pack=x"), git_headers, 400, MAL),
    Hostile("git bare option", "git", git_body(ref="--upload-pack=evil"), git_headers, 400, MAL),
    Hostile("git shell in ref", "git", git_body(ref="refs/heads/$(reboot)"), git_headers, 400, MAL),
    Hostile("gitlab dot-dot ref", GL, variant(GL, setting(ref="refs/heads/a..b")), signed(GL), 400, MAL),
    Hostile(
        "gitlab tag hook for a branch",
        GL,
        sample(GL),
        signed(GL, {EVENT_HEADER[GL]: "Tag Push Hook"}),
        400,
        MAL,
    ),
    Hostile("git short sha", "git", git_body(after="abc"), git_headers, 400, MAL),
    Hostile("git non-hex sha", "git", git_body(before="g" * 40), git_headers, 400, MAL),
    Hostile("gitea uppercase sha", GT, variant(GT, setting(after="A" * 40)), signed(GT), 400, MAL),
    Hostile(
        "gitea delete of a commit",
        GT,
        variant(GT, setting(ref="x", ref_type="commit")),
        signed(GT, {EVENT_HEADER[GT]: "delete"}),
        400,
        MAL,
    ),
    Hostile("bitbucket short sha", BB, variant(BB, bb_new_hash("141977f")), signed(BB), 400, MAL),
    Hostile(
        "bitbucket no changes", BB, variant(BB, lambda d: d["push"].update(changes=[])), signed(BB), 400, MAL
    ),
    Hostile(
        "bitbucket old and new differ",
        BB,
        variant(BB, lambda d: d["push"]["changes"][0]["old"].update(name="other")),
        signed(BB),
        400,
        MAL,
    ),
    Hostile(
        "bitbucket change neither old nor new",
        BB,
        variant(BB, bb_change(old=None, new=None)),
        signed(BB),
        400,
        MAL,
    ),
    # --- unknown things
    Hostile("unknown provider", "svn", SIGNED, signed(GH), 404, "unknown_provider"),
    Hostile(
        "git unknown repository", "git", git_body(repository="other"), git_headers, 404, "unknown_repository"
    ),
    Hostile(
        "gitlab unknown repository",
        GL,
        variant(GL, lambda d: d["project"].update(path_with_namespace="x/y")),
        signed(GL),
        404,
        "unknown_repository",
    ),
    Hostile(
        "bitbucket unknown repository",
        BB,
        variant(BB, lambda d: d["repository"].update(full_name="x/y")),
        signed(BB),
        404,
        "unknown_repository",
    ),
    Hostile(
        "github unknown event type", GH, SIGNED, signed(GH, {EVENT_HEADER[GH]: "issues"}), 200, "ignored"
    ),
    Hostile(
        "gitlab unknown event type",
        GL,
        sample(GL),
        signed(GL, {EVENT_HEADER[GL]: "Issue Hook"}),
        200,
        "ignored",
    ),
    Hostile(
        "forgejo release event", FJ, sample(FJ), signed(FJ, {EVENT_HEADER[FJ]: "release"}), 200, "ignored"
    ),
    Hostile(
        "bitbucket fork event", BB, sample(BB), signed(BB, {EVENT_HEADER[BB]: "repo:fork"}), 200, "ignored"
    ),
    Hostile("git notes ref", "git", git_body(ref="refs/notes/commits"), git_headers, 200, "ignored"),
    # --- replays
    Hostile(
        "github same delivery, other body",
        GH,
        SIGNED.replace(b"Update README", b"Update READMX"),
        signed(GH, {DELIVERY_HEADER[GH]: "dup-gh"}),
        409,
        "delivery_conflict",
        prior=_dup(GH, "dup-gh"),
    ),
    Hostile(
        "bitbucket same delivery, other body",
        BB,
        variant(BB, bb_change(forced=True)),
        signed(BB, {DELIVERY_HEADER[BB]: "dup-bb"}),
        409,
        "delivery_conflict",
        prior=_dup(BB, "dup-bb"),
    ),
]


def stored(client: FlaskClient) -> tuple[int, int]:
    with client.application.app_context(), loopline().db.session() as s:
        deliveries = s.scalar(select(func.count()).select_from(Delivery))
        runs = s.scalar(select(func.count()).select_from(Run))
        return int(deliveries or 0), int(runs or 0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hostile_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlaskClient]:
    """One app per store for the whole table: each row checks what it changed, not the total."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    with fresh_database(request.param, tmp_path) as url:
        made = app_for(tmp_path, url)
        yield made
        dispose(made)


def test_the_table_covers_every_provider() -> None:
    assert len(HOSTILE) >= 30
    assert {row.provider for row in HOSTILE} >= {GH, GL, GT, FJ, BB, "git"}


@pytest.mark.parametrize("row", HOSTILE, ids=[row.name for row in HOSTILE])
def test_hostile_requests(hostile_client: FlaskClient, row: Hostile) -> None:
    if row.prior is not None:
        body, headers = row.prior
        assert hostile_client.post(f"/hooks/{row.provider}", data=body, headers=headers).status_code == 202
    before = stored(hostile_client)
    answer = hostile_client.post(f"/hooks/{row.provider}", data=row.body, headers=row.headers(row.body))
    assert answer.status_code == row.status, answer.json
    if row.code == "ignored":
        assert answer.json["status"] == "ignored" and answer.json["reason"]
    else:
        assert answer.json["error"] == row.code and answer.json["message"]
    assert stored(hostile_client) == before  # nothing stored as a delivery, no run made


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


def test_deeply_nested_json_to_an_action_is_not_a_500(tmp_path: Path) -> None:
    """Hostile nesting is invalid JSON to ``request.get_json`` on every endpoint (here: a body
    that is not the documented object), never a RecursionError."""
    app = create_app({"settings": make_settings(tmp_path, api_token="t"), "TESTING": True})
    answer = app.test_client().post(
        "/api/runs/1/approve",
        data=b"[" * 50000 + b"]" * 50000,
        headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400 and answer.json["error"] == "bad_body"
    with app.app_context():
        loopline().db.dispose()
