"""Bitbucket Cloud webhooks: ``X-Event-Key``, ``X-Request-UUID``, ``X-Hub-Signature``.

``X-Hub-Signature`` is ``sha256=`` + the hex HMAC-SHA256 of the raw body (webhooks with a
secret). ``X-Request-UUID`` names the request and stays the same on Bitbucket's retries
(``X-Attempt-Number`` counts them); ``X-Hook-UUID`` names the webhook, not the delivery.

Only ``repo:push`` runs anything. One push may update several refs: ``push.changes[]`` holds one
entry per ref, each with ``old``/``new`` (``null`` for a creation/deletion), ``forced`` and
``truncated`` (the commit list is cut; it is never read: changed files come from ``git diff``).
:func:`parse` returns one event per change, in order; each is stored as its own delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.events import ZERO_SHA, Event, Ignored, PayloadError, full_ref, git_event
from pipelines.providers.base import (
    Headers,
    RunState,
    StatusApi,
    StatusRequest,
    delivery_header,
    header,
    load_json,
    require_header,
    signature_matches,
    url_path,
)

if TYPE_CHECKING:
    from pipelines.config import StatusConfig

#: More ref updates than this in one request is not something Bitbucket sends.
MAX_CHANGES = 1000


def verify(headers: Headers, body: bytes, secret: bytes) -> bool:
    return signature_matches(header(headers, "X-Hub-Signature"), secret, body)


def delivery_id(headers: Headers, body: bytes) -> str:
    return delivery_header(headers, "X-Request-UUID")


def parse(headers: Headers, body: bytes) -> list[Event]:
    kind = require_header(headers, "X-Event-Key")
    data = load_json(body)
    if kind != "repo:push":
        raise Ignored(f"Bitbucket {kind[:100]!r} events are not acted on; only repo:push")
    repository = data.get("repository")
    name = repository.get("full_name") if isinstance(repository, dict) else None
    if not isinstance(name, str) or not name:
        raise PayloadError("repository.full_name is missing")
    push = data.get("push")
    changes = push.get("changes") if isinstance(push, dict) else None
    if not isinstance(changes, list) or not changes:
        raise PayloadError("push.changes must be a non-empty list")
    if len(changes) > MAX_CHANGES:
        raise PayloadError(f"more than {MAX_CHANGES} ref changes in one push")
    return [_change(name, change) for change in changes]


def _change(repository: str, change: object) -> Event:
    if not isinstance(change, dict):
        raise PayloadError("each push change must be an object")
    old, new = _side(change, "old"), _side(change, "new")
    if old is None and new is None:
        raise PayloadError("a push change needs old or new")
    refs = {full_ref(side.get("name"), side.get("type")) for side in (old, new) if side is not None}
    if len(refs) != 1:
        raise PayloadError("old and new of a push change name different refs")
    target = new.get("target") if new is not None else None
    return git_event(
        repository,
        refs.pop(),
        _hash(old),
        _hash(new),
        forced=change.get("forced") is True,
        message=target.get("message") if isinstance(target, dict) else None,
    )


def _side(change: dict[str, Any], key: str) -> dict[str, Any] | None:
    side = change.get(key)
    if side is not None and not isinstance(side, dict):
        raise PayloadError(f"push change {key} must be an object or null")
    return side


def _hash(side: dict[str, Any] | None) -> object:
    """The commit a side of a change points at; a missing side (creation, deletion) is zero."""
    if side is None:
        return ZERO_SHA
    target = side.get("target")
    return target.get("hash") if isinstance(target, dict) else None


STATES = {
    "queued": "INPROGRESS",
    "running": "INPROGRESS",
    "awaiting_approval": "INPROGRESS",
    "succeeded": "SUCCESSFUL",
    "skipped": "SUCCESSFUL",
    "failed": "FAILED",
    "gate_failed": "FAILED",
    "cancelled": "STOPPED",
}


def status_request(config: StatusConfig, run: RunState, state: str, link: str) -> StatusRequest:
    body = {"key": config.context, "state": state, "url": link, "name": f"Loopline run #{run.id}"}
    body["description"] = run.description()
    if run.branch:
        body["refname"] = run.branch
    path = f"{url_path(config.repository)}/commit/{run.commit}/statuses/build"
    return StatusRequest(f"{config.api_url}/repositories/{path}", body)


status = StatusApi(
    "https://api.bitbucket.org/2.0",
    STATES,
    status_request,
    lambda token: {"Authorization": f"Bearer {token}"},
)
