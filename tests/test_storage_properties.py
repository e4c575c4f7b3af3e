"""No body and no header makes a storage parser raise anything but ``PayloadError`` or ``Ignored``,
and every object a parser returns has a key that can safely become a path."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.events import Ignored, PayloadError, unsafe_key
from service.storage import PARSERS
from tests.conftest import PAYLOADS

SEEDS = [
    p.read_bytes()
    for folder in ("s3", "minio", "azure", "cloudevents")
    for p in (PAYLOADS / folder).glob("*.json")
]
KEYS = [
    "Records",
    "s3",
    "bucket",
    "object",
    "key",
    "name",
    "size",
    "eTag",
    "sequencer",
    "versionId",
    "eventName",
    "body",
    "Sns",
    "Message",
    "Type",
    "detail-type",
    "source",
    "detail",
    "etag",
    "version-id",
    "Event",
    "eventType",
    "type",
    "subject",
    "topic",
    "data",
    "api",
    "url",
    "sourceUrl",
    "contentLength",
    "validationCode",
    "specversion",
    "id",
    "data_base64",
    "time",
]
VALUES = [
    "ObjectCreated:Put",
    "s3:ObjectRemoved:Delete",
    "s3:TestEvent",
    "aws.s3",
    "Object Created",
    "Notification",
    "Microsoft.Storage.BlobCreated",
    "Microsoft.Storage.BlobRenamed",
    "Microsoft.Storage.BlobDeleted",
    "Microsoft.EventGrid.SubscriptionValidationEvent",
    "/blobServices/default/containers/c/blobs/a/b",
    "/subscriptions/x/storageAccounts/acct",
    "1.0",
    "CreateFile",
    "%2E%2E/x",
    "a+b%00",
    "00FF",
    "e30=",
    "https://acct.dfs.core.windows.net/c/a",
    "com.amazonaws.s3.ObjectCreated",
    "aws:sqs",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(VALUES),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
headers = st.dictionaries(
    st.sampled_from(["Content-Type", "aeg-event-type", "Authorization", "X-Other"]),
    st.sampled_from(
        [
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "SubscriptionValidation",
            "SubscriptionDeletion",
            "Notification",
            "text/plain",
            "",
        ]
    )
    | st.text(max_size=20),
)


def _mutated(seed: bytes, cut: int, insert: bytes) -> bytes:
    cut %= len(seed) + 1
    return seed[:cut] + insert + seed[cut + len(insert) :]


bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(_mutated, st.sampled_from(SEEDS), st.integers(0, 3000), st.binary(min_size=1, max_size=8))
    | json_values.map(
        lambda v: json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": v}]}).encode()
    )
    | json_values.map(
        lambda v: json.dumps(
            [
                {
                    "eventType": "Microsoft.Storage.BlobCreated",
                    "data": v,
                    "subject": "/blobServices/default/containers/c/blobs/k",
                    "topic": "/storageAccounts/a",
                }
            ]
        ).encode()
    )
    | json_values.map(
        lambda v: json.dumps(
            {"specversion": "1.0", "id": "1", "source": "s", "type": "s3:ObjectCreated:Put", "data": v}
        ).encode()
    )
)


def _check(parser: Any, head: dict[str, str], body: bytes) -> None:
    try:
        found = parser.parse(head, body)
    except (PayloadError, Ignored):
        return
    for item in found.objects:
        assert unsafe_key(item.key) is None and item.store in ("s3", "azure")
        assert item.size is None or (isinstance(item.size, int) and item.size >= 0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(PARSERS)), headers, bodies)
def test_parsers_raise_only_documented_errors(name: str, head: dict[str, str], body: bytes) -> None:
    _check(PARSERS[name], head, body)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), headers, st.sampled_from(SEEDS))
def test_recorded_bodies_under_any_headers(name: str, head: dict[str, str], body: bytes) -> None:
    _check(PARSERS[name], head, body)
