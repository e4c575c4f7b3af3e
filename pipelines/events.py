"""Normalized events: what every webhook dialect and storage notification becomes.

Each sender speaks its own JSON; the rest of Loopline only ever sees these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

ZERO_SHA = "0" * 40
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# git check-ref-format, restricted further: no "..", no control chars, no leading "-".
_REF_RE = re.compile(
    r"^refs/(heads|tags)/(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/+@=-]{1,200}(?<![./])$"
)


class PayloadError(ValueError):
    """The body is not a well-formed event of the claimed kind (answered with 400)."""


class Ignored(Exception):
    """The event is understood and deliberately not acted on (answered with 200)."""

    def __init__(self, reason: str, response: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: What the sender expects back instead of the usual answer (e.g. a handshake).
        self.response = response


@dataclass(frozen=True)
class DataObject:
    """One object in a data lake: a file in a folder, a blob or an S3 key."""

    store: str
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Event:
    """A normalized change: a push, a tag, a deletion or new data."""

    type: str  # push | tag | delete | data
    repository: str
    ref: str | None = None
    before: str | None = None
    after: str | None = None
    created: bool = False
    deleted: bool = False
    forced: bool = False
    message: str | None = None
    objects: tuple[DataObject, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies and was a sixth of the webhook ack's CPU.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["objects"] = [{f.name: getattr(o, f.name) for f in fields(o)} for o in self.objects]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        objects = tuple(DataObject(**o) for o in data.get("objects", ()))
        return cls(**{**data, "objects": objects})


def valid_sha(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA_RE.match(value))


def valid_ref(value: object) -> bool:
    return isinstance(value, str) and bool(_REF_RE.match(value)) and not value.endswith(".lock")


def git_event(
    repository: str,
    ref: object,
    before: object,
    after: object,
    *,
    forced: bool = False,
    message: str | None = None,
) -> Event:
    """Build a push/tag/delete event from the ref update every git dialect reports.

    Refs and SHAs are validated here, once, so nothing malformed ever reaches git.
    """
    if not valid_ref(ref):
        raise PayloadError(f"invalid ref: {str(ref)[:100]!r}")
    if not valid_sha(before) or not valid_sha(after):
        raise PayloadError("before/after must be full commit SHAs")
    assert isinstance(ref, str) and isinstance(before, str) and isinstance(after, str)
    deleted = set(after) == {"0"}
    created = set(before) == {"0"}
    kind = "delete" if deleted else ("tag" if ref.startswith("refs/tags/") else "push")
    return Event(
        type=kind,
        repository=repository,
        ref=ref,
        before=before,
        after=after,
        created=created,
        deleted=deleted,
        forced=forced,
        message=message,
    )
