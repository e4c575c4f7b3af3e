"""How each Git host signs and names a delivery: the tests' own sender for every provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

from pipelines import providers
from tests.conftest import PAYLOADS

#: Every registered host: a new one is fuzzed and signed here as soon as it has an entry.
PROVIDERS = tuple(providers.PROVIDERS)
#: The Git webhook part of the corpus (the storage events have tests of their own).
INDEX: dict[str, dict[str, Any]] = {
    f["file"]: f
    for f in json.loads((PAYLOADS / "index.json").read_text())["files"]
    if f["provider"] in PROVIDERS
}
#: The header naming the event type (the generic git hook sends none).
EVENT_HEADER = {
    "github": "X-GitHub-Event",
    "gitlab": "X-Gitlab-Event",
    "gitea": "X-Gitea-Event",
    "forgejo": "X-Forgejo-Event",
    "bitbucket": "X-Event-Key",
}
DELIVERY_HEADER = {
    "github": "X-GitHub-Delivery",
    "gitlab": "Idempotency-Key",
    "gitea": "X-Gitea-Delivery",
    "forgejo": "X-Forgejo-Delivery",
    "bitbucket": "X-Request-UUID",
    "git": "X-Loopline-Delivery",
}
#: Where each host puts its proof, and how it is made from the secret and the raw body.
SIGNATURE_HEADER = {
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
    "gitea": "X-Gitea-Signature",
    "forgejo": "X-Forgejo-Signature",
    "bitbucket": "X-Hub-Signature",
    "git": "X-Loopline-Signature-256",
}


def signature(provider: str, body: bytes, secret: bytes) -> str:
    if provider == "gitlab":
        return secret.decode()  # GitLab sends the token itself, not an HMAC
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return digest if provider in ("gitea", "forgejo") else "sha256=" + digest


def headers_for(
    provider: str, body: bytes, secret: bytes | None, event: str | None = None, delivery: str | None = None
) -> dict[str, str]:
    """What ``provider`` sends with ``body``: event type, a fresh delivery id, the signature."""
    headers = {"Content-Type": "application/json", DELIVERY_HEADER[provider]: delivery or str(uuid.uuid4())}
    if provider in EVENT_HEADER:
        headers[EVENT_HEADER[provider]] = event or default_event(provider)
    if secret is not None:
        headers[SIGNATURE_HEADER[provider]] = signature(provider, body, secret)
    return headers


def default_event(provider: str) -> str:
    return {"gitlab": "Push Hook", "bitbucket": "repo:push"}.get(provider, "push")


def recorded_headers(name: str, provider: str) -> dict[str, str]:
    """The documented headers of a recorded body, as ``provider`` sends them: Forgejo sends the
    Gitea set (bodies and all) plus its own ``X-Forgejo-*`` names."""
    headers = dict(INDEX[name]["headers"])
    if provider == "forgejo":
        headers["X-Forgejo-Event"] = headers["X-Gitea-Event"]
    return headers
