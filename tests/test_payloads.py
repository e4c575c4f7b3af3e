"""Every recorded Git payload, byte for byte with its documented headers, through the real app.

Expected fields are read off each body by hand (see the folders' SOURCES.md); a body the host
signs is signed here with a test secret (``topsecret``: the published GitHub vector's key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipelines import providers
from pipelines.config import RepoConfig
from pipelines.events import ZERO_SHA
from service import create_app
from service.state import loopline
from store.models import Delivery
from tests.conftest import PAYLOADS, make_settings
from tests.webhooks import INDEX, PROVIDERS, SIGNATURE_HEADER, headers_for, recorded_headers, signature

SECRET = b"topsecret"


def push(repository: str, ref: str, before: str, after: str, *, forced: bool = False) -> dict[str, Any]:
    zero_before, zero_after = set(before or "0") == {"0"}, set(after) == {"0"}
    kind = "delete" if zero_after else ("tag" if ref.startswith("refs/tags/") else "push")
    return {
        "type": kind,
        "repository": repository,
        "ref": ref,
        "before": before,
        "after": after,
        "created": zero_before and not zero_after,
        "deleted": zero_after,
        "forced": forced,
    }


DRONE_GO = "bradrydzewski/drone-test-go"
HELLO_GL = "gitlab-org/hello-world"
HELLO_GITEA = "gogits/hello-world"
BB = "brydzewski/foo"
D2B = "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"
B14 = "141977fedf5cf35aa290ac87d4b5177ac4cd9de1"
#: file → ("accepted", event) | ("deleted", event) | ("ignored", words of the reason)
EXPECTED: dict[str, tuple[str, Any]] = {
    "github/push-modified-file.json": (
        "accepted",
        push(
            "baxterthehacker/public-repo",
            "refs/heads/changes",
            "9049f1265b7d61be4a8904a9a27120d2064dab3b",
            "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        ),
    ),
    "github/push-modified-file-signed.json": (
        "accepted",
        push(
            "Codertocat/Hello-World",
            "refs/heads/master",
            "a10867b14bb761a232cd80139fbd4c0d33264240",
            "199eddf46df50de8d02e99bf1c5fdb4101338224",
        ),
    ),
    "github/push-new-branch-with-commit.json": (
        "accepted",
        push(
            "Codertocat/Hello-World",
            "refs/heads/master",
            ZERO_SHA,
            "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        ),
    ),
    "github/push-branch-created-no-commits.json": (
        "accepted",
        push(DRONE_GO, "refs/heads/feature-branch", ZERO_SHA, D2B),
    ),
    "github/push-branch-deleted.json": (
        "deleted",
        push(DRONE_GO, "refs/heads/feature-branch", D2B, ZERO_SHA),
    ),
    "github/push-tag-created.json": ("accepted", push(DRONE_GO, "refs/tags/v0.0.1", ZERO_SHA, D2B)),
    "github/push-legacy-2012-force-reset-no-commits.json": (
        "accepted",
        push(
            "danheberden/payloads",
            "refs/heads/master",
            "437e39244651552916514aa9cc1f3c23b798a017",
            "263c5253cc1578ed49892d0db8876da4ec26da84",
            forced=True,
        ),
    ),
    "github/ping.json": ("ignored", "ping"),
    "github/pull_request-opened.json": ("ignored", "pull requests are not built"),
    "github/pull_request-synchronize.json": ("ignored", "pull requests are not built"),
    "github/create-tag.json": ("ignored", "creation arrive as push events"),
    "github/delete-tag.json": ("ignored", "deletion arrive as push events"),
    "gitlab/push-hook-docs.json": (
        "accepted",
        push(
            "mike/diaspora",
            "refs/heads/master",
            "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        ),
    ),
    "gitlab/tag-push-hook-docs.json": (
        "accepted",
        push("jsmith/example", "refs/tags/v1.0.0", ZERO_SHA, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"),
    ),
    "gitlab/push-hook-added-file.json": (
        "accepted",
        push(
            HELLO_GL,
            "refs/heads/master",
            "9217710ce8c7e1eae7a5d1c45f6e43e1c769f866",
            "2adc9465c4edfc33834e173fe89436a7cb899a1d",
        ),
    ),
    "gitlab/push-hook-branch-deleted.json": (
        "deleted",
        push(HELLO_GL, "refs/heads/feature", "c4c79227ed610f1151f05bbc5be33b4f340d39c8", ZERO_SHA),
    ),
    "gitlab/tag-push-hook-created.json": (
        "accepted",
        push(HELLO_GL, "refs/tags/v1.0.0", ZERO_SHA, "2adc9465c4edfc33834e173fe89436a7cb899a1d"),
    ),
    "gitea/push-docs-example.json": (
        "accepted",
        push(
            "gitea/webhooks",
            "refs/heads/develop",
            "28e1879d029cb852e4844d9c718537df08844e03",
            "bffeb74224043ba2feb48d137756c8a9331c449a",
        ),
    ),
    "gitea/push-modified-readme.json": (
        "accepted",
        push(
            HELLO_GITEA,
            "refs/heads/master",
            "9836a96a253cce25d17988fcf41b8c4205cf779f",
            "4522cbcefc20728a5b72b3a86af35e608622c514",
        ),
    ),
    "gitea/delete-branch.json": ("deleted", push(HELLO_GITEA, "refs/heads/feature", None, ZERO_SHA)),  # type: ignore[arg-type]
    "gitea/create-tag.json": ("ignored", "also arrives as a push"),
    "bitbucket/repo-push-branch-updated.json": (
        "accepted",
        push(BB, "refs/heads/master", "40e7580cf11311d84a6e5e97e2cbba6df1675750", B14),
    ),
    "bitbucket/repo-push-branch-created.json": ("accepted", push(BB, "refs/heads/develop", ZERO_SHA, B14)),
    "bitbucket/repo-push-branch-deleted.json": ("deleted", push(BB, "refs/heads/develop", B14, ZERO_SHA)),
}
CASES = [
    (name, provider)
    for name in sorted(EXPECTED)
    for provider in (
        ("gitea", "forgejo") if INDEX[name]["provider"] == "gitea" else (INDEX[name]["provider"],)
    )
]


def repositories() -> tuple[RepoConfig, ...]:
    """One registered repository per (provider, name) the corpus mentions."""
    seen: dict[tuple[str, str], RepoConfig] = {}
    for name, provider in CASES:
        body = json.loads((PAYLOADS / name).read_bytes())
        for match in _names(provider, body):
            key = (provider, match)
            seen.setdefault(
                key, RepoConfig(name=f"r{len(seen)}", provider=provider, match=match, url="/nowhere")
            )
    return tuple(seen.values())


def _names(provider: str, body: dict[str, Any]) -> list[str]:
    if provider == "gitlab":
        return [body["project"]["path_with_namespace"]]
    repo = body["repository"]
    return [repo.get("full_name") or f"{repo['owner']['name']}/{repo['name']}"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    repos = repositories()
    settings = make_settings(
        tmp_path_factory.mktemp("corpus"), repos, secrets={r.name: SECRET for r in repos}
    )
    app = create_app({"settings": settings, "TESTING": True})
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


def stored(client: FlaskClient) -> int:
    with client.application.app_context(), loopline().db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery)) or 0)


def sent_headers(name: str, provider: str, body: bytes) -> dict[str, str]:
    """The documented headers, plus a delivery id and a signature where the file has none."""
    made = headers_for(provider, body, SECRET)
    return {**made, **recorded_headers(name, provider)}


def test_every_file_is_the_shared_corpus_byte_for_byte() -> None:
    git_files = {
        p.relative_to(PAYLOADS).as_posix() for p in PAYLOADS.glob("*/*.json") if p.parent.name in PROVIDERS
    }
    assert git_files == set(INDEX) == set(EXPECTED)
    for name, entry in INDEX.items():
        data = (PAYLOADS / name).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name


@pytest.mark.parametrize(("name", "provider"), CASES, ids=[f"{p}:{n}" for n, p in CASES])
def test_recorded_payload(client: FlaskClient, name: str, provider: str) -> None:
    body = (PAYLOADS / name).read_bytes()
    headers = sent_headers(name, provider, body)
    outcome, expected = EXPECTED[name]
    before = stored(client)
    answer = client.post(f"/hooks/{provider}", data=body, headers=headers)
    if outcome == "ignored":
        assert answer.status_code == 200 and answer.json["status"] == "ignored", answer.json
        assert expected in answer.json["reason"]
        assert stored(client) == before
        return
    (event,) = providers.PROVIDERS[provider].parse(headers, body)
    assert {k: v for k, v in event.to_dict().items() if k in expected} == expected
    if outcome == "deleted":
        assert answer.status_code == 200, answer.json
        assert answer.json["status"] == "ignored" and expected["ref"] in answer.json["reason"]
        assert answer.json["cancelled_run_ids"] == []
        assert stored(client) == before
        return
    assert answer.status_code == 202 and answer.json["status"] == "accepted", answer.json
    record = client.get(f"/api/events/{answer.json['event_id']}").json
    assert record["provider"] == provider and record["status"] == "pending"
    assert {k: record["event"][k] for k in expected if k != "repository"} == {
        k: v for k, v in expected.items() if k != "repository"
    }
    again = client.post(f"/hooks/{provider}", data=body, headers=headers)
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert stored(client) == before + 1


FORGEABLE = {
    "github": "github/push-modified-file-signed.json",
    "gitlab": "gitlab/push-hook-docs.json",
    "gitea": "gitea/push-modified-readme.json",
    "forgejo": "gitea/push-modified-readme.json",
    "bitbucket": "bitbucket/repo-push-branch-updated.json",
}


def _forgeries(provider: str, body: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    name = FORGEABLE[provider]
    good = sent_headers(name, provider, body)
    key = SIGNATURE_HEADER[provider]
    unsigned = {k: v for k, v in good.items() if k != key}
    flipped = body[:40] + bytes([body[40] ^ 1]) + body[41:]
    reserialized = json.dumps(json.loads(body)).encode()
    cases = [
        ("missing", body, unsigned),
        ("wrong secret", body, {**good, key: signature(provider, body, b"topsecreT")}),
        ("uppercase hex", body, {**good, key: good[key].upper()}),
    ]
    if provider != "gitlab":  # GitLab's token is not bound to the body: there is nothing to forge
        cases += [("one changed byte", flipped, good), ("re-serialized", reserialized, good)]
    return cases


@pytest.mark.parametrize("provider", sorted(FORGEABLE))
def test_forged_deliveries_are_refused(client: FlaskClient, provider: str) -> None:
    body = (PAYLOADS / FORGEABLE[provider]).read_bytes()
    before = stored(client)
    for label, data, headers in _forgeries(provider, body):
        answer = client.post(f"/hooks/{provider}", data=data, headers=headers)
        assert answer.status_code == 401 and answer.json["error"] == "bad_signature", label
    assert stored(client) == before


def test_github_legacy_sha1_alone_is_refused(client: FlaskClient) -> None:
    name = "github/push-modified-file-signed.json"
    headers = {k: v for k, v in INDEX[name]["headers"].items() if k != "X-Hub-Signature-256"}
    assert "X-Hub-Signature" in headers  # the published, valid SHA-1 signature
    answer = client.post("/hooks/github", data=(PAYLOADS / name).read_bytes(), headers=headers)
    assert answer.status_code == 401


@pytest.mark.parametrize("provider", ["gitea", "forgejo"])
def test_gitea_body_secret_is_never_authentication(client: FlaskClient, provider: str) -> None:
    """The docs example carries ``"secret"``; a forger who sets it to the real secret gets nowhere,
    and neither do the compatibility headers Gitea also sends (``X-Hub-Signature-256``)."""
    data = json.loads((PAYLOADS / "gitea/push-docs-example.json").read_bytes())
    data["secret"] = SECRET.decode()
    body = json.dumps(data).encode()
    headers = sent_headers("gitea/push-docs-example.json", provider, body)
    del headers[SIGNATURE_HEADER[provider]]
    for extra in (
        {},
        {SIGNATURE_HEADER[provider]: "0" * 64},
        {"X-Hub-Signature-256": signature("github", body, SECRET)},
    ):
        answer = client.post(f"/hooks/{provider}", data=body, headers={**headers, **extra})
        assert answer.status_code == 401, extra


def test_forgejo_reads_only_its_own_headers(client: FlaskClient) -> None:
    """Forgejo also sends ``X-Gitea-*``; at ``/hooks/forgejo`` only ``X-Forgejo-*`` count."""
    name = "gitea/push-modified-readme.json"
    body = (PAYLOADS / name).read_bytes()
    gitea_only = sent_headers(name, "gitea", body)
    assert client.post("/hooks/forgejo", data=body, headers=gitea_only).status_code == 401
    signed = {**gitea_only, "X-Forgejo-Signature": signature("forgejo", body, SECRET)}
    answer = client.post("/hooks/forgejo", data=body, headers=signed)
    assert answer.status_code == 400 and "X-Forgejo-Event" in answer.json["message"]
