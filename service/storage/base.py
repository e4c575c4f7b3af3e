"""What the storage senders share: the interface, strict JSON, typed field readers, the result type."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.events import SEQUENCER_WIDTH, DataObject, PayloadError, unsafe_key
from pipelines.providers.base import Headers

_HEX_RE = re.compile(rf"^[0-9A-Fa-f]{{1,{SEQUENCER_WIDTH}}}$")


@dataclass
class Notification:
    """The objects a request reports, and the records deliberately not acted on."""

    objects: list[DataObject] = field(default_factory=list)
    #: (what, why) per record understood and skipped: a folder placeholder, a tagging event …
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Notification) -> None:
        self.objects.extend(other.objects)
        self.skipped.extend(other.skipped)


class Sender(Protocol):
    """One object store's notifications: a module in :data:`service.storage.PARSERS`."""

    #: Whether it answers the CloudEvents webhook handshake (``OPTIONS``) Event Grid sends.
    @property
    def HANDSHAKE(self) -> bool: ...

    def parse(self, headers: Headers, body: bytes) -> Notification:
        """The objects reported. Raises :class:`~pipelines.events.PayloadError` for a malformed
        body and :class:`~pipelines.events.Ignored` for one that asks for nothing, whatever the bytes."""
        ...


def decode_json(body: bytes) -> Any:
    """Any JSON value, strictly: UTF-8 and bounded nesting (Event Grid posts arrays)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not UTF-8") from exc
    try:
        return json.loads(text)
    except RecursionError as exc:  # hostile nesting: a fast 400, not a crash
        raise PayloadError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise PayloadError(f"body is not valid JSON: {str(exc)[:200]}") from exc


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object")
    return value


def text(value: Any, what: str, *, required: bool = False) -> str | None:
    """A string field; empty counts as absent (MinIO sends ``"sequencer": ""``)."""
    if value is None or value == "":
        if required:
            raise PayloadError(f"{what} is missing")
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string")
    if len(value) > 4096:
        raise PayloadError(f"{what} is too long")
    return value


def size(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"{what} must be a non-negative integer")
    return value


def etag(value: Any, what: str) -> str | None:
    """ETags arrive bare (S3) or quoted (Azure's ``"\\"0x8D4…\\""``); stored bare."""
    found = text(value, what)
    return found.strip('"') or None if found else None


def sequencer(value: Any, what: str) -> str | None:
    found = text(value, what)
    if found is not None and not _HEX_RE.match(found):
        raise PayloadError(f"{what} must be a hexadecimal string of at most {SEQUENCER_WIDTH} digits")
    return found


def checked(item: DataObject) -> DataObject:
    """Refuse a key that could not become a path inside a workspace (see ``unsafe_key``)."""
    problem = unsafe_key(item.key)
    if problem:
        raise PayloadError(f"refusing object key {item.key[:100]!r}: {problem}")
    return item


def placeholder(item: DataObject) -> bool:
    """A key ending in ``/`` is a "folder" the S3 console or ADLS made: no data in it."""
    return item.key.endswith("/")
