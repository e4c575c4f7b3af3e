"""Generic git (``post-receive``) deliveries: ``{"repository", "ref", "before", "after"}``.

Sent by the hook ``loopline install-hook`` writes; signed with ``X-Loopline-Signature-256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pipelines.events import Event, PayloadError, git_event
from service.dialects.base import header, load_json, signature_matches

SIGNATURE_HEADER = "X-Loopline-Signature-256"
DELIVERY_HEADER = "X-Loopline-Delivery"


def verify(headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    return signature_matches(header(headers, SIGNATURE_HEADER), secret, body)


def delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    """The hook's own id, else the body's hash: the same ref update is the same delivery."""
    return header(headers, DELIVERY_HEADER) or "sha256:" + hashlib.sha256(body).hexdigest()


def parse(headers: Mapping[str, str], body: bytes) -> Event:
    data = load_json(body)
    repository = data.get("repository")
    if not isinstance(repository, str) or not repository:
        raise PayloadError("repository must be a non-empty string")
    message = data.get("message")
    return git_event(
        repository,
        data.get("ref"),
        data.get("before"),
        data.get("after"),
        forced=data.get("forced") is True,
        message=message if isinstance(message, str) else None,
    )
