"""GitLab webhooks: ``X-Gitlab-Event``, ``X-Gitlab-Token``, ``Idempotency-Key``.

GitLab does not sign bodies: it sends the webhook's secret token itself in ``X-Gitlab-Token``,
compared here in constant time. ``Push Hook`` reports branch creation, updates and deletion,
``Tag Push Hook`` tag creation and deletion. The ``commits`` list holds at most 20 entries
(``total_commits_count`` is the real count), so it only supplies the tip's message when listed;
the changed files always come from ``git diff`` in the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from pipelines.events import Event, Ignored, PayloadError, git_event
from pipelines.providers.base import (
    Headers,
    RunState,
    StatusApi,
    StatusRequest,
    commit_message,
    delivery_header,
    header,
    load_json,
    require_header,
    token_matches,
)

if TYPE_CHECKING:
    from pipelines.config import StatusConfig

#: Event header → the ref namespace its refs must be in.
EVENTS = {"Push Hook": "refs/heads/", "Tag Push Hook": "refs/tags/"}


def verify(headers: Headers, body: bytes, secret: bytes) -> bool:
    return token_matches(header(headers, "X-Gitlab-Token"), secret)


def delivery_id(headers: Headers, body: bytes) -> str:
    """``Idempotency-Key`` (GitLab 17.4+, the same on every retry), else ``X-Gitlab-Event-UUID``
    (GitLab 14.8+)."""
    return delivery_header(headers, "Idempotency-Key", "X-Gitlab-Event-UUID")


def parse(headers: Headers, body: bytes) -> list[Event]:
    kind = require_header(headers, "X-Gitlab-Event")
    data = load_json(body)
    if kind not in EVENTS:
        raise Ignored(f"GitLab {kind[:100]!r} events are not acted on; only Push Hook and Tag Push Hook")
    project = data.get("project")
    name = project.get("path_with_namespace") if isinstance(project, dict) else None
    if not isinstance(name, str) or not name:
        raise PayloadError("project.path_with_namespace is missing")
    event = git_event(
        name,
        data.get("ref"),
        data.get("before"),
        data.get("after"),
        message=commit_message(data.get("commits"), data.get("after")),
    )
    if not (event.ref or "").startswith(EVENTS[kind]):
        raise PayloadError(f"a {kind} must be for a ref under {EVENTS[kind]}")
    return [event]


#: GitLab refuses going back from running to pending, so a run waiting for approval stays "running".
STATES = {
    "queued": "pending",
    "running": "running",
    "awaiting_approval": "running",
    "succeeded": "success",
    "skipped": "success",
    "failed": "failed",
    "gate_failed": "failed",
    "cancelled": "canceled",
}


def status_request(config: StatusConfig, run: RunState, state: str, link: str) -> StatusRequest:
    body = {"state": state, "name": config.context, "target_url": link, "description": run.description()}
    if run.branch:
        body["ref"] = run.branch
    project = quote(config.repository, safe="")
    return StatusRequest(f"{config.api_url}/projects/{project}/statuses/{run.commit}", body)


status = StatusApi(
    "https://gitlab.com/api/v4", STATES, status_request, lambda token: {"PRIVATE-TOKEN": token}
)
