"""GitHub webhooks: ``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-Hub-Signature-256``.

Only ``push`` runs anything: it reports every branch and tag creation, update, force push and
deletion. The legacy SHA-1 ``X-Hub-Signature`` is never accepted on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.events import Event, Ignored, git_event
from pipelines.providers.base import (
    Headers,
    RunState,
    StatusApi,
    StatusRequest,
    delivery_header,
    full_name,
    header,
    load_json,
    require_header,
    signature_matches,
    url_path,
)

if TYPE_CHECKING:
    from pipelines.config import StatusConfig

_NOT_BUILT = {
    "create": "branch and tag creation arrive as push events too; the push is what runs",
    "delete": "branch and tag deletion arrive as push events too; the push cancels what was queued",
    "pull_request": "pull requests are not built; pushes to their branches are",
}


def verify(headers: Headers, body: bytes, secret: bytes) -> bool:
    return signature_matches(header(headers, "X-Hub-Signature-256"), secret, body)


def delivery_id(headers: Headers, body: bytes) -> str:
    return delivery_header(headers, "X-GitHub-Delivery")


def parse(headers: Headers, body: bytes) -> list[Event]:
    kind = require_header(headers, "X-GitHub-Event")
    data = load_json(body)
    if kind == "ping":
        zen = data.get("zen")
        zen = zen if isinstance(zen, str) else None
        raise Ignored("ping", {"status": "ignored", "reason": "ping", "zen": zen})
    if kind != "push":
        raise Ignored(_NOT_BUILT.get(kind, f"GitHub event {kind[:100]!r} is not acted on; only push runs"))
    head = data.get("head_commit")
    return [
        git_event(
            full_name(data.get("repository")),
            data.get("ref"),
            data.get("before"),
            data.get("after"),
            forced=data.get("forced") is True,
            message=head.get("message") if isinstance(head, dict) else None,
        )
    ]


#: GitHub's commit states (Gitea and Forgejo use the same API).
STATES = {
    "queued": "pending",
    "running": "pending",
    "awaiting_approval": "pending",
    "succeeded": "success",
    "skipped": "success",
    "failed": "failure",
    "gate_failed": "failure",
    "cancelled": "error",
}


def status_request(config: StatusConfig, run: RunState, state: str, link: str) -> StatusRequest:
    body = {"state": state, "target_url": link, "description": run.description(), "context": config.context}
    return StatusRequest(f"{config.api_url}/repos/{url_path(config.repository)}/statuses/{run.commit}", body)


status = StatusApi(
    "https://api.github.com",
    STATES,
    status_request,
    lambda token: {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    },
)
