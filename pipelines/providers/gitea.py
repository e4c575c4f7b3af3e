"""Gitea and Forgejo webhooks: the same payloads, headers named after the host.

``X-Gitea-Signature`` / ``X-Forgejo-Signature`` is the hex HMAC-SHA256 of the raw body with no
prefix; ``X-Gitea-Delivery`` / ``X-Forgejo-Delivery`` and ``X-Gitea-Event`` / ``X-Forgejo-Event``
name the delivery and the event. Both hosts also send ``X-GitHub-Event`` and ``X-Hub-Signature``
for compatibility; those are never read, and neither is the body's deprecated ``secret`` field:
the URL says which host sent the request, the host's own signature header proves it.

``push`` runs; ``create`` is ignored (the branch or tag also arrives as a push); ``delete`` is
a deletion, as is a push whose ``after`` is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.events import Event, Ignored, deletion, full_ref, git_event
from pipelines.providers import github
from pipelines.providers.base import (
    Headers,
    StatusApi,
    commit_message,
    delivery_header,
    full_name,
    header,
    load_json,
    require_header,
    signature_matches,
)


@dataclass(frozen=True)
class GiteaDialect:
    #: ``X-Gitea`` or ``X-Forgejo``.
    prefix: str
    status: StatusApi

    def verify(self, headers: Headers, body: bytes, secret: bytes) -> bool:
        return signature_matches(header(headers, f"{self.prefix}-Signature"), secret, body, prefix="")

    def delivery_id(self, headers: Headers, body: bytes) -> str:
        return delivery_header(headers, f"{self.prefix}-Delivery")

    def parse(self, headers: Headers, body: bytes) -> list[Event]:
        kind = require_header(headers, f"{self.prefix}-Event")
        data = load_json(body)
        if kind == "create":
            raise Ignored("a created branch or tag also arrives as a push event; the push is what runs")
        if kind not in ("push", "delete"):
            raise Ignored(f"{kind[:100]!r} events are not acted on; only push and delete")
        repository = full_name(data.get("repository"))
        if kind == "delete":
            return [deletion(repository, full_ref(data.get("ref"), data.get("ref_type")))]
        head = data.get("head_commit")
        message = head.get("message") if isinstance(head, dict) else None
        return [
            git_event(
                repository,
                data.get("ref"),
                data.get("before"),
                data.get("after"),
                message=message or commit_message(data.get("commits"), data.get("after")),
            )
        ]


#: GitHub's API with Gitea's token header; always self-hosted, so ``status.api_url`` is required.
STATUS = StatusApi(
    None, github.STATES, github.status_request, lambda token: {"Authorization": f"token {token}"}
)
GITEA = GiteaDialect("X-Gitea", STATUS)
FORGEJO = GiteaDialect("X-Forgejo", STATUS)
