"""CloudEvents 1.0 over HTTP, structured (``application/cloudevents+json``, one event) and batch
(``application/cloudevents-batch+json``, an array).

Storage events inside are mapped by ``type``: ``Microsoft.Storage.Blob*`` are Azure events (as
Event Grid sends them in its CloudEvents schema); S3-family types (``com.amazonaws.s3.*``,
``aws.s3*``, ``io.minio.*``, ``s3:*``, ``ObjectCreated:*``, ``ObjectRemoved:*``) carry an S3
notification, EventBridge event or single S3 record as ``data`` or ``data_base64``. Other types
are understood and skipped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pipelines.events import Ignored, PayloadError
from pipelines.providers.base import Headers
from service.storage.azure import storage_event
from service.storage.base import Notification, decode_json, mapping, text
from service.storage.s3 import notification

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_S3_TYPES = ("com.amazonaws.s3.", "aws.s3", "io.minio.", "s3:", "ObjectCreated:", "ObjectRemoved:")


HANDSHAKE = True  # the CloudEvents webhook handshake


def parse(headers: Headers, body: bytes) -> Notification:
    media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    data = decode_json(body)
    if media == BATCH and not isinstance(data, list):
        raise PayloadError(f"{BATCH} must be a JSON array")
    if media == STRUCTURED and not isinstance(data, dict):
        raise PayloadError(f"{STRUCTURED} must be a JSON object")
    events = data if isinstance(data, list) else [data]
    if not events:
        raise Ignored("empty batch")
    found = Notification()
    for i, event in enumerate(events):
        found.extend(_event(mapping(event, f"event [{i}]"), f"[{i}]"))
    return found


def _event(event: dict[str, Any], where: str) -> Notification:
    if event.get("specversion") != "1.0":
        raise PayloadError(f'{where}.specversion must be "1.0"')
    for attribute in ("id", "source", "type"):
        text(event.get(attribute), f"{where}.{attribute}", required=True)
    kind = str(event["type"])
    if kind.startswith("Microsoft.Storage."):
        return storage_event({**event, "data": _data(event, where)}, kind, where)
    if kind.startswith(_S3_TYPES):
        data = mapping(_data(event, where), f"{where}.data")
        try:
            if "s3" in data and "eventName" in data:  # a single record
                return notification({"Records": [data]})
            return notification(data)
        except Ignored as exc:
            return Notification(skipped=[(kind, exc.reason)])
    return Notification(skipped=[(kind[:200], "not a storage event type")])


def _data(event: dict[str, Any], where: str) -> Any:
    """The event's data: JSON ``data`` (an object, or a string holding JSON) or ``data_base64``."""
    if "data" in event and "data_base64" in event:
        raise PayloadError(f"{where}: data and data_base64 are mutually exclusive")
    if "data_base64" in event:
        encoded = text(event["data_base64"], f"{where}.data_base64", required=True) or ""
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PayloadError(f"{where}.data_base64 is not base64") from exc
        return decode_json(raw)
    data = event.get("data")
    if isinstance(data, str):
        return decode_json(data.encode("utf-8", "surrogatepass"))
    return data
