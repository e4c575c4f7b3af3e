"""Normalized events: what every webhook dialect and storage notification becomes.

Each sender speaks its own JSON; the rest of Loopline only ever sees these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from pipelines.errors import LooplineError

ZERO_SHA = "0" * 40
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z")
# git check-ref-format, restricted further: a short ASCII set, no "..", "//" or "@{", no component
# that starts with "." or "-" or ends with ".lock", no "." or "/" at the end.
_REF_RE = re.compile(
    r"^refs/(?P<namespace>[a-z][a-z0-9_-]{0,30})/"
    r"(?![.-])(?!.*/[.-])(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock(/|$))"
    r"[A-Za-z0-9._/+@=-]{1,200}(?<![./])\Z"
)
#: Where a branch or tag lives; Gitea's create/delete events and Bitbucket name them short.
REF_PREFIXES = {"branch": "refs/heads/", "tag": "refs/tags/"}
#: Longer commit messages are left out of the event; the worker reads the message from git.
MAX_MESSAGE = 4096
#: Event types that ask for a run of a branch's tip without any change (``pipelines/triggers.py``).
TRIGGERS = ("manual", "schedule", "drift", "volume", "performance")


class PayloadError(LooplineError, ValueError):
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
    """A normalized change: a push, a tag, a deletion or new data; or a trigger (:data:`TRIGGERS`)
    asking for a run of ``ref``'s tip, ``reason`` saying why."""

    type: str  # push | tag | delete | data | manual | schedule | drift | volume | performance
    repository: str
    ref: str | None = None
    before: str | None = None
    after: str | None = None
    created: bool = False
    deleted: bool = False
    forced: bool = False
    message: str | None = None
    objects: tuple[DataObject, ...] = field(default_factory=tuple)
    reason: str | None = None

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
    """A well-formed branch or tag ref (``refs/heads/…``, ``refs/tags/…``)."""
    match = _REF_RE.match(value) if isinstance(value, str) else None
    return match is not None and match["namespace"] in ("heads", "tags")


def _checked_ref(ref: object) -> str:
    """``ref`` if it is a branch or tag; a well-formed ref elsewhere (``refs/notes/…``, which a
    post-receive hook reports too) is :class:`Ignored`; anything else is a :class:`PayloadError`."""
    match = _REF_RE.match(ref) if isinstance(ref, str) and len(ref) <= 255 else None
    if match is None:
        shown = ref[:100] if isinstance(ref, str) else type(ref).__name__
        raise PayloadError(f"invalid ref: {shown!r}")
    assert isinstance(ref, str)
    if match["namespace"] not in ("heads", "tags"):
        raise Ignored(f"{ref} is neither a branch nor a tag; only those run pipelines")
    return ref


def full_ref(name: object, ref_type: object) -> str:
    """``("main", "branch")`` → ``refs/heads/main``: the full ref for a short name and its type."""
    if not isinstance(ref_type, str) or ref_type not in REF_PREFIXES:
        raise PayloadError(f"ref type must be one of {', '.join(REF_PREFIXES)}")
    if not isinstance(name, str) or not name:
        raise PayloadError("ref name must be a non-empty string")
    return REF_PREFIXES[ref_type] + name


def git_event(
    repository: str,
    ref: object,
    before: object,
    after: object,
    *,
    forced: bool = False,
    message: object = None,
) -> Event:
    """Build a push/tag/delete event from the ref update every git dialect reports.

    Refs and SHAs are validated here, once, so nothing malformed ever reaches git. A zero
    ``before`` is a creation, a zero ``after`` a deletion.
    """
    ref = _checked_ref(ref)
    if not valid_sha(before) or not valid_sha(after):
        raise PayloadError("before/after must be full commit SHAs")
    assert isinstance(before, str) and isinstance(after, str)
    deleted = set(after) == {"0"}
    created = set(before) == {"0"}
    if created and deleted:
        raise PayloadError("before and after cannot both be zero")
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
        message=message if isinstance(message, str) and len(message) <= MAX_MESSAGE else None,
    )


def deletion(repository: str, ref: object) -> Event:
    """A branch or tag deletion reported without SHAs (Gitea's and Forgejo's ``delete`` event)."""
    return Event(type="delete", repository=repository, ref=_checked_ref(ref), after=ZERO_SHA, deleted=True)
