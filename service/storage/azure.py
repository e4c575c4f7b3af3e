"""Azure Event Grid deliveries from Blob Storage and ADLS Gen2, in the Event Grid schema
(``eventType``, ``topic``) or the CloudEvents schema (``type``, ``source``); always an array.

The storage account comes from ``topic``/``source`` (``…/storageAccounts/<account>``), the
container and blob name from ``subject`` (``/blobServices/default/containers/<c>/blobs/<name>``);
``data.url`` is never fetched: Loopline builds blob URLs from its own configuration.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from pipelines.events import DataObject, Ignored, PayloadError
from pipelines.providers.base import Headers
from service.storage.base import (
    Notification,
    checked,
    decode_json,
    etag,
    mapping,
    placeholder,
    sequencer,
    size,
    text,
)

VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
_ACCOUNT_RE = re.compile(r"/storageAccounts/([^/]+)")
_SUBJECT_RE = re.compile(r"^/blobServices/default/containers/([^/]+)/blobs/(.+)$")
_SKIPPED = {
    "Microsoft.EventGrid.SubscriptionDeletedEvent": "the subscription was deleted",
    "Microsoft.Storage.DirectoryCreated": "a directory holds no data itself",
    "Microsoft.Storage.DirectoryDeleted": "directory events list no files; retrain on new data instead",
    "Microsoft.Storage.DirectoryRenamed": "directory events list no files; retrain on new data instead",
}


HANDSHAKE = True  # the CloudEvents webhook handshake


def parse(headers: Headers, body: bytes) -> Notification:
    if (headers.get("aeg-event-type") or "").strip() == "SubscriptionDeletion":
        raise Ignored("Event Grid SubscriptionDeletion")
    data = decode_json(body)
    events = data if isinstance(data, list) else [data]
    if not events:
        raise Ignored("no events")
    found = Notification()
    for i, event in enumerate(events):
        event = mapping(event, f"event [{i}]")
        kind = text(event.get("eventType", event.get("type")), f"[{i}].eventType", required=True)
        assert kind is not None
        if kind == VALIDATION:
            code = text(mapping(event.get("data"), "data").get("validationCode"), "data.validationCode")
            if code is None:
                raise PayloadError("data.validationCode is missing")
            raise Ignored("subscription validation", {"validationResponse": code})
        found.extend(storage_event(event, kind, f"[{i}]"))
    return found


def storage_event(event: dict[str, Any], kind: str, where: str) -> Notification:
    """One Event Grid or CloudEvents-schema event (also reached through ``/events/cloudevents``)."""
    if kind in _SKIPPED:
        return Notification(skipped=[(kind, _SKIPPED[kind])])
    if kind not in (
        "Microsoft.Storage.BlobCreated",
        "Microsoft.Storage.BlobDeleted",
        "Microsoft.Storage.BlobRenamed",
    ):
        return Notification(skipped=[(kind, "not a new, removed or renamed blob")])
    data = mapping(event.get("data"), f"{where}.data")
    origin = text(event.get("topic", event.get("source")), f"{where}.topic", required=True) or ""
    account = _ACCOUNT_RE.search(origin)
    subject = _SUBJECT_RE.match(text(event.get("subject"), f"{where}.subject", required=True) or "")
    if account is None or subject is None:
        raise PayloadError(f"{where}: topic/subject do not name a storage account, container and blob")
    base = DataObject(
        store="azure",
        account=account.group(1),
        bucket=subject.group(1),
        key=subject.group(2),
        sequencer=sequencer(data.get("sequencer"), f"{where}.data.sequencer"),
        event_time=text(event.get("eventTime", event.get("time")), f"{where}.eventTime"),
    )
    if kind == "Microsoft.Storage.BlobDeleted":
        return _kept(checked(replace(base, removed=True)))
    if kind == "Microsoft.Storage.BlobRenamed":  # the destination is new; the source is gone
        source = unquote(
            urlsplit(text(data.get("sourceUrl"), f"{where}.data.sourceUrl", required=True) or "").path
        )
        container, _, key = source.lstrip("/").partition("/")
        gone = checked(replace(base, bucket=container, key=key, removed=True))
        renamed = _kept(checked(base))
        renamed.extend(_kept(gone))
        return renamed
    api = text(data.get("api"), f"{where}.data.api")
    found = checked(
        replace(
            base,
            size=size(data.get("contentLength"), f"{where}.data.contentLength"),
            etag=etag(data.get("eTag"), f"{where}.data.eTag"),
            version=text(data.get("versionId"), f"{where}.data.versionId"),
        )
    )
    if api == "CreateFile":
        return Notification(
            skipped=[(found.url, "ADLS Gen2 CreateFile: still being written; waiting for FlushWithClose")]
        )
    return _kept(found)


def _kept(found: DataObject) -> Notification:
    if placeholder(found):
        return Notification(skipped=[(found.url, "a folder placeholder (name ends with '/'): no data")])
    return Notification(objects=[found])
