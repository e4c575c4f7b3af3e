"""Generic git (``post-receive``) deliveries: ``{"repository", "ref", "before", "after"}``.

Sent by the hook ``loopline install-hook`` writes, one request per updated ref; signed with
``X-Loopline-Signature-256``. Refs outside ``refs/heads`` and ``refs/tags`` are ignored.
"""

from __future__ import annotations

import hashlib

from pipelines.events import Event, PayloadError, git_event
from pipelines.providers.base import Headers, delivery_header, header, load_json, signature_matches

SIGNATURE_HEADER = "X-Loopline-Signature-256"
DELIVERY_HEADER = "X-Loopline-Delivery"
#: A plain Git server has no commit-status API.
status = None


def verify(headers: Headers, body: bytes, secret: bytes) -> bool:
    return signature_matches(header(headers, SIGNATURE_HEADER), secret, body)


def delivery_id(headers: Headers, body: bytes) -> str:
    """The hook's own id, else the body's hash: the same ref update is the same delivery."""
    if header(headers, DELIVERY_HEADER) is None:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    return delivery_header(headers, DELIVERY_HEADER)


def parse(headers: Headers, body: bytes) -> list[Event]:
    data = load_json(body)
    repository = data.get("repository")
    if not isinstance(repository, str) or not repository:
        raise PayloadError("repository must be a non-empty string")
    return [
        git_event(
            repository,
            data.get("ref"),
            data.get("before"),
            data.get("after"),
            forced=data.get("forced") is True,
            message=data.get("message"),
        )
    ]
