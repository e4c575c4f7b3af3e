"""AWS S3 and MinIO bucket notifications, in every envelope a forwarder may keep.

S3 cannot POST to a URL itself; what arrives is its ``{"Records": […]}`` notification as sent to
Lambda, the same wrapped by SQS (``Records[].body``, a JSON string) or SNS (``Message``), the
EventBridge shape (``detail-type: Object Created``), or MinIO's ``{EventName, Key, Records}``.
Keys in ``Records`` are form-encoded (``New+File.jpg`` is ``New File.jpg``); EventBridge keys are not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

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

MAX_ENVELOPES = 3  # SQS around SNS around S3 is the deepest real nesting
TEST_EVENT = "s3:TestEvent"
#: Event names that mean the key no longer holds data, besides ``ObjectRemoved:*``.
_REMOVALS = ("LifecycleExpiration:Delete", "LifecycleExpiration:DeleteMarkerCreated")


HANDSHAKE = False  # the CloudEvents webhook handshake


def parse(headers: Headers, body: bytes) -> Notification:
    return notification(decode_json(body))


def notification(data: Any, depth: int = 0) -> Notification:
    """Objects in an S3 notification or any envelope around one (also used for CloudEvents data)."""
    if depth > MAX_ENVELOPES:
        raise PayloadError("envelopes nested too deeply")
    data = mapping(data, "the notification")
    if data.get("Event") == TEST_EVENT:
        raise Ignored(f"{TEST_EVENT}: sent once when a bucket notification is configured")
    kind = data.get("Type")
    if kind == "Notification" and "Message" in data:  # SNS over HTTPS
        return notification(_inner(data["Message"], "Message"), depth + 1)
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise Ignored(f"SNS {kind}: confirm it in the SNS console; Loopline never fetches a payload's URL")
    if "detail-type" in data:
        return _eventbridge(data)
    records = data.get("Records")
    if not isinstance(records, list):
        raise PayloadError("Records must be a list")
    if not records:
        raise Ignored("no records")
    found = Notification()
    for i, record in enumerate(records):
        record = mapping(record, f"Records[{i}]")
        try:
            if "body" in record and "s3" not in record:  # an SQS message
                found.extend(notification(_inner(record["body"], f"Records[{i}].body"), depth + 1))
            elif "Sns" in record:  # SNS delivered to Lambda
                message = mapping(record["Sns"], f"Records[{i}].Sns").get("Message")
                found.extend(notification(_inner(message, f"Records[{i}].Sns.Message"), depth + 1))
            else:
                found.extend(_record(record, f"Records[{i}]"))
        except Ignored as exc:  # one test event in a batch of messages
            found.skipped.append((f"Records[{i}]", exc.reason))
    return found


def _inner(value: Any, what: str) -> Any:
    body = text(value, what, required=True)
    assert body is not None
    return decode_json(body.encode("utf-8", "surrogatepass"))


def _record(record: dict[str, Any], where: str) -> Notification:
    name = text(record.get("eventName"), f"{where}.eventName", required=True)
    assert name is not None
    name = name.removeprefix("s3:")  # MinIO keeps the prefix, AWS drops it
    s3 = mapping(record.get("s3"), f"{where}.s3")
    bucket = mapping(s3.get("bucket"), f"{where}.s3.bucket")
    item = mapping(s3.get("object"), f"{where}.s3.object")
    key = text(item.get("key"), f"{where}.s3.object.key", required=True)
    assert key is not None
    removed = name.startswith("ObjectRemoved:") or name in _REMOVALS
    found = checked(
        DataObject(
            store="s3",
            bucket=text(bucket.get("name"), f"{where}.s3.bucket.name", required=True) or "",
            key=unquote_plus(key),
            size=size(item.get("size"), f"{where}.s3.object.size"),
            etag=etag(item.get("eTag"), f"{where}.s3.object.eTag"),
            version=_version(item.get("versionId"), f"{where}.s3.object.versionId"),
            sequencer=sequencer(item.get("sequencer"), f"{where}.s3.object.sequencer"),
            event_time=text(record.get("eventTime"), f"{where}.eventTime"),
            removed=removed,
        )
    )
    return _classified(found, name, created=name.startswith("ObjectCreated:"))


def _eventbridge(data: dict[str, Any]) -> Notification:
    kind = text(data.get("detail-type"), "detail-type", required=True)
    if data.get("source") != "aws.s3":
        raise Ignored(f"EventBridge event from {str(data.get('source'))[:100]!r} is not an S3 event")
    detail = mapping(data.get("detail"), "detail")
    item = mapping(detail.get("object"), "detail.object")
    found = checked(
        DataObject(
            store="s3",
            bucket=text(
                mapping(detail.get("bucket"), "detail.bucket").get("name"),
                "detail.bucket.name",
                required=True,
            )
            or "",
            key=text(item.get("key"), "detail.object.key", required=True) or "",
            size=size(item.get("size"), "detail.object.size"),
            etag=etag(item.get("etag"), "detail.object.etag"),
            version=_version(item.get("version-id"), "detail.object.version-id"),
            sequencer=sequencer(item.get("sequencer"), "detail.object.sequencer"),
            event_time=text(data.get("time"), "time"),
            removed=kind == "Object Deleted",
        )
    )
    return _classified(found, f"EventBridge {kind}", created=kind == "Object Created")


def _classified(found: DataObject, name: str, *, created: bool) -> Notification:
    if not (created or found.removed):
        return Notification(skipped=[(found.url, f"{name}: neither a new nor a removed object")])
    if placeholder(found):
        return Notification(skipped=[(found.url, "a folder placeholder (key ends with '/'): no data")])
    return Notification(objects=[found])


def _version(value: Any, what: str) -> str | None:
    """``versionId``; ``"null"`` is what S3 reports for an unversioned object."""
    found = text(value, what)
    return None if found == "null" else found
