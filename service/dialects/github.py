"""GitHub webhooks: ``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-Hub-Signature-256``.

The legacy SHA-1 ``X-Hub-Signature`` is never accepted on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.events import Event, Ignored, PayloadError, git_event
from service.dialects.base import header, load_json, require_header, signature_matches

_NOT_BUILT = {
    "create": "branch and tag creation arrive as push events too; the push is what runs",
    "delete": "branch and tag deletion arrive as push events too",
    "pull_request": "pull requests are not built; pushes to their branches are",
}


def verify(headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    return signature_matches(header(headers, "X-Hub-Signature-256"), secret, body)


def delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    return require_header(headers, "X-GitHub-Delivery")


def repository_name(repo: Any) -> str:
    if not isinstance(repo, dict):
        raise PayloadError("repository must be an object")
    full = repo.get("full_name")
    if isinstance(full, str) and full:
        return full
    owner = repo.get("owner")
    if not isinstance(owner, dict):
        owner = {}
    login = owner.get("login") or owner.get("name")
    name = repo.get("name")
    if isinstance(login, str) and isinstance(name, str):  # payloads from before full_name existed
        return f"{login}/{name}"
    raise PayloadError("repository.full_name is missing")


def parse(headers: Mapping[str, str], body: bytes) -> Event:
    kind = require_header(headers, "X-GitHub-Event")
    data = load_json(body)
    if kind == "ping":
        raise Ignored("ping", {"status": "ignored", "reason": "ping", "zen": data.get("zen")})
    if kind != "push":
        raise Ignored(_NOT_BUILT.get(kind, f"event type {kind!r} is not acted on"))
    head = data.get("head_commit")
    message = head.get("message") if isinstance(head, dict) else None
    return git_event(
        repository_name(data.get("repository")),
        data.get("ref"),
        data.get("before"),
        data.get("after"),
        forced=data.get("forced") is True,
        message=message if isinstance(message, str) else None,
    )
