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
    """One object in a data lake: a file in a folder, a blob or an S3 key.

    ``key`` is always decoded (S3 sends ``New+File.jpg`` for ``New File.jpg``). ``path`` is where
    the object lands under the project's ``data.into``: the key below its ``data_lake`` prefix,
    filled in once the object is matched to a repository.
    """

    store: str  # folder | s3 | azure
    bucket: str  # folder path, S3 bucket or Azure container
    key: str
    size: int | None = None
    etag: str | None = None
    version: str | None = None
    #: Orders events for one key: S3 and Azure hex sequencers (see :func:`sequencer_order`).
    sequencer: str | None = None
    event_time: str | None = None
    #: True for a removal (``ObjectRemoved:*``, ``BlobDeleted``): recorded, never fetched.
    removed: bool = False
    account: str | None = None  # Azure storage account
    path: str | None = None

    @property
    def url(self) -> str:
        """A display name: ``s3://bucket/key``, ``azure://account/container/key``, ``folder://…``."""
        where = f"{self.account}/{self.bucket}" if self.account else self.bucket.lstrip("/")
        return f"{self.store}://{where}/{self.key}"


def sequencer_order(sequencer: str) -> str:
    """A sort key for hex sequencers: AWS says to left-pad the shorter one and compare as strings."""
    return sequencer.lower().rjust(SEQUENCER_WIDTH, "0")


SEQUENCER_WIDTH = 64


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


MAX_KEY_BYTES = 1024  # S3's and Azure's own limit for an object key / blob name
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_key(key: str) -> str | None:
    """Why ``key`` cannot become a path under ``data.into`` (None if it can).

    Keys are names in a flat namespace, so ``..``, ``/abs`` or ``a//b`` are legal there; here they
    would leave the workspace or collide, so they are refused before anything is stored.
    """
    if not key:
        return "empty key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    if _CONTROL_RE.search(key):
        return "key contains NUL or control characters"
    if key.startswith("/"):
        return "absolute key"
    if any(part in ("", ".", "..") for part in key.removesuffix("/").split("/")):
        return "key has '.', '..' or empty path segments"
    return None


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
