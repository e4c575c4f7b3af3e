"""``POST /events/*`` through the real app: every recorded storage body, the token, dedupe and
order per object, and a hostile table where nothing is ever stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipelines.config import AzureLake, DataLakeEntry, RepoConfig, S3Lake
from pipelines.events import Event, sequencer_order
from service import create_app
from service.state import loopline
from store.models import Delivery, LakeObject, utcnow
from tests.conftest import PAYLOADS, make_settings
from tests.test_actions_relay import Recorder
from workers.intake import wanted_objects
from workers.relay import relay_once

TOKEN = "ev-T0ken/with+odd=chars"
QUERY_TOKEN = quote(TOKEN, safe="")  # a query string must be URL-encoded ("+" is a space)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INDEX = {f["file"]: f for f in json.loads((PAYLOADS / "index.json").read_text())["files"]}


def s3(bucket: str, prefix: str = "") -> DataLakeEntry:
    return DataLakeEntry(s3=S3Lake(bucket=bucket, prefix=prefix))


def azure(container: str, account: str = "my-storage-account") -> DataLakeEntry:
    return DataLakeEntry(azure=AzureLake(account=account, container=container))


LAKE = RepoConfig(
    name="lake",
    provider="git",
    match="lake",
    url="/srv/lake.git",
    data_lake=(
        s3("mybucket"),
        s3("sourcebucket"),
        s3("lambda-artifacts-deafc19498e3f2df"),
        s3("xxx"),
        s3("images"),
        s3("churn-data", "incoming/"),
        azure("test-container"),
        azure("testcontainer"),
        azure("my-file-system"),
    ),
)


Factory = Callable[[tuple[RepoConfig, ...], "str | None"], FlaskClient]


@pytest.fixture
def make_client(tmp_path: Path, db_url: str) -> Iterator[Factory]:
    made: list[FlaskClient] = []

    def make(repos: tuple[RepoConfig, ...], token: str | None) -> FlaskClient:
        settings = make_settings(
            tmp_path, repos, db_url=db_url, event_token=token, max_body_bytes=1024 * 1024
        )
        made.append(create_app({"settings": settings, "TESTING": True}).test_client())
        return made[-1]

    yield make
    for client in made:
        with client.application.app_context():
            loopline().db.dispose()


@pytest.fixture
def client(make_client: Factory) -> FlaskClient:
    return make_client((LAKE,), TOKEN)


def stored(client: FlaskClient) -> tuple[int, int]:
    """(deliveries, lake_objects rows): both must stay 0 for anything refused."""
    with client.application.app_context(), loopline().db.session() as s:
        return (
            int(s.scalar(select(func.count()).select_from(Delivery)) or 0),
            int(s.scalar(select(func.count()).select_from(LakeObject)) or 0),
        )


def objects_of(client: FlaskClient, answer: Any) -> list[dict[str, Any]]:
    found = []
    for entry in answer.json["events"]:
        event = client.get(f"/api/events/{entry['event_id']}").json
        assert event["provider"] == event["event"]["objects"][0]["store"] and event["repository"] == "lake"
        found.extend(event["event"]["objects"])
    return found


def obj(store: str, bucket: str, key: str, **kw: Any) -> dict[str, Any]:
    base = {"store": store, "bucket": bucket, "key": key, "size": None, "etag": None, "version": None}
    base.update({"sequencer": None, "removed": False, "account": None})
    return {**base, **kw}


AZ = {"account": "my-storage-account", "event_time": "2017-06-26T18:41:00.9584103Z"}
CREATED_TXT = obj(
    "azure",
    "test-container",
    "new-file.txt",
    size=524288,
    etag="0x8D4BCC2E4835CD0",
    sequencer="00000000000004420000000000028963",
    **AZ,
)
RENAME_SEQ = "00000000000004420000000000028963"
CORPUS = [
    # (file, endpoint, status, objects as stored)
    (
        "s3/objectcreated-put-aws-docs.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "mybucket",
                "HappyFace.jpg",
                size=1024,
                etag="d41d8cd98f00b204e9800998ecf8427e",
                version="096fKKXTRTtl3on89fVO.nfljtsv6qko",
                sequencer="0055AED6DCD90281E5",
                event_time="1970-01-01T00:00:00.000Z",
            )
        ],
    ),
    (
        "s3/objectcreated-put.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "lambda-artifacts-deafc19498e3f2df",
                "b21b84d653bb07b05b1e6b33684dc11b",
                size=1305107,
                etag="b21b84d653bb07b05b1e6b33684dc11b",
                sequencer="0C0F6F405D6ED209E1",
                event_time="2019-09-03T19:37:27.192Z",
            )
        ],
    ),
    (
        "s3/objectremoved-delete.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "lambda-artifacts-deafc19498e3f2df",
                "b21b84d653bb07b05b1e6b33684dc11b",
                sequencer="0C0F6F405D6ED209E1",
                event_time="2019-09-03T19:37:27.192Z",
                removed=True,
            )
        ],
    ),
    (
        "s3/objectcreated-put-two-records-plus-encoded-key.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "sourcebucket",
                key,
                size=1024,
                etag="0123456789abcdef0123456789abcdef",
                sequencer="0A1B2C3D4E5F678901",
                event_time="1970-01-01T00:00:00.000Z",
            )
            for key in ("HappyFace.jpg", "New File.jpg")
        ],
    ),
    (
        "s3/sqs-envelope-objectcreated-put.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "xxx",
                "test.pdf",
                size=104681,
                etag="2e3ad1e983318bbd8e73b080e2997980",
                version="yd3d4HaWOT2zguDLvIQLU6ptDTwKBnQV",
                sequencer="00643717F9F8B85354",
                event_time="2023-04-12T20:43:38.021Z",
            )
        ],
    ),
    (
        "minio/objectcreated-put-multipart-etag.json",
        "s3",
        202,
        [
            obj(
                "s3",
                "images",
                "myphoto.jpg",
                size=6474,
                etag="430f89010c77aa34fc8760696da62d08-1",
                version="1",
                sequencer="15C32494527B46C5",
                event_time="2019-09-10T17:41:54Z",
            )
        ],
    ),
    ("azure/blobcreated-eventgrid-schema.json", "azure", 202, [CREATED_TXT]),
    ("azure/blobcreated-cloudevents-schema.json", "azure", 202, [CREATED_TXT]),
    ("azure/blobcreated-cloudevents-schema.json", "cloudevents", 202, [CREATED_TXT]),
    (
        "azure/blobdeleted-eventgrid-schema.json",
        "azure",
        202,
        [
            obj(
                "azure",
                "testcontainer",
                "file-to-delete.txt",
                sequencer="0000000000000281000000000002F5CA",
                removed=True,
                account="my-storage-account",
                event_time="2017-11-07T20:09:22.5674003Z",
            )
        ],
    ),
    (
        "azure/blobrenamed-adls-gen2-eventgrid-schema.json",
        "azure",
        202,
        [
            obj("azure", "my-file-system", "my-renamed-file.txt", sequencer=RENAME_SEQ, **AZ),
            obj("azure", "my-file-system", "my-original-file.txt", sequencer=RENAME_SEQ, removed=True, **AZ),
        ],
    ),
]
IGNORED = [
    ("s3/s3-test-event.json", "s3", "s3:TestEvent"),
    ("cloudevents/structured-json-object-data.json", "cloudevents", "not a storage event type"),
    ("cloudevents/structured-data_base64.json", "cloudevents", "not a storage event type"),
    ("cloudevents/structured-xml-string-data.json", "cloudevents", "not a storage event type"),
]


def payload(name: str) -> tuple[bytes, dict[str, str]]:
    """The recorded bytes (checked against index.json) and their documented headers."""
    body = (PAYLOADS / name).read_bytes()
    assert hashlib.sha256(body).hexdigest() == INDEX[name]["sha256"] and len(body) == INDEX[name]["bytes"]
    return body, {"Content-Type": "application/json", **INDEX[name]["headers"]}


@pytest.mark.parametrize(("name", "sender", "status", "expected"), CORPUS)
def test_recorded_storage_bodies(
    client: FlaskClient, name: str, sender: str, status: int, expected: list[dict]
) -> None:
    body, headers = payload(name)
    if sender == "cloudevents":
        headers["Content-Type"] = "application/cloudevents-batch+json"
    answer = client.post(f"/events/{sender}", data=body, headers={**headers, **AUTH})
    assert answer.status_code == status, answer.json
    assert (
        answer.json["status"] == "accepted"
        and answer.json["event_id"] == answer.json["events"][0]["event_id"]
    )
    assert [e["status"] for e in answer.json["events"]] == ["accepted"] * len(expected)
    found = objects_of(client, answer)
    assert len(found) == len(expected)
    assert [{k: o[k] for k in e} for o, e in zip(found, expected, strict=True)] == expected
    assert stored(client)[0] == len(expected)
    # The retry every sender makes after a lost answer changes nothing.
    again = client.post(f"/events/{sender}", data=body, headers={**headers, **AUTH})
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert [e["event_id"] for e in again.json["events"]] == [e["event_id"] for e in answer.json["events"]]
    assert stored(client)[0] == len(expected)


@pytest.mark.parametrize(("name", "sender", "reason"), IGNORED)
def test_recorded_bodies_deliberately_ignored(
    client: FlaskClient, name: str, sender: str, reason: str
) -> None:
    body, headers = payload(name)
    answer = client.post(f"/events/{sender}", data=body, headers={**headers, **AUTH})
    assert answer.status_code == 200 and answer.json["status"] == "ignored"
    assert reason in answer.json["reason"]
    assert stored(client) == (0, 0)


def test_subscription_validation_handshake(client: FlaskClient) -> None:
    body, headers = payload("azure/subscription-validation-event.json")
    assert headers["aeg-event-type"] == "SubscriptionValidation"
    answer = client.post(f"/events/azure?token={QUERY_TOKEN}", data=body, headers=headers)
    expected = json.loads((PAYLOADS / "azure/subscription-validation-response.json").read_bytes())
    assert answer.status_code == 200 and answer.json == expected
    assert stored(client) == (0, 0)


def test_cloudevents_abuse_protection_handshake(client: FlaskClient) -> None:
    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    assert client.options("/events/cloudevents", headers=origin).status_code == 401
    answer = client.options("/events/cloudevents", headers={**origin, **AUTH})
    assert answer.status_code == 200 and answer.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert client.options("/events/azure", headers=AUTH).json["error"] == "missing_header"


def test_without_a_configured_token_storage_events_are_refused(make_client: Factory) -> None:
    client = make_client((LAKE,), None)
    body, headers = payload("s3/objectcreated-put.json")
    for auth in ({}, AUTH):
        answer = client.post("/events/s3", data=body, headers={**headers, **auth})
        assert answer.status_code == 403 and answer.json["error"] == "events_disabled"
        assert "LOOPLINE_EVENT_TOKEN" in answer.json["message"]
    assert stored(client) == (0, 0)


def test_no_repository_for_the_store_is_a_404(make_client: Factory) -> None:
    only_s3 = RepoConfig(name="lake", provider="git", match="lake", url="/x", data_lake=(s3("mybucket"),))
    client = make_client((only_s3,), TOKEN)
    body, headers = payload("azure/blobcreated-eventgrid-schema.json")
    answer = client.post("/events/azure", data=body, headers={**headers, **AUTH})
    assert answer.status_code == 404 and answer.json["error"] == "unknown_repository"
    assert stored(client) == (0, 0)


def record(
    key: str, *, seq: str, name: str = "ObjectCreated:Put", etag: str | None = "e1", size: int = 3
) -> dict:
    item: dict[str, Any] = {"key": key, "sequencer": seq}
    if not name.startswith("ObjectRemoved"):
        item.update(size=size, eTag=etag)
    return {
        "eventName": name,
        "eventTime": "2026-01-01T00:00:00Z",
        "s3": {"bucket": {"name": "churn-data"}, "object": item},
    }


def send(client: FlaskClient, *records: dict) -> Any:
    return client.post("/events/s3", json={"Records": list(records)}, headers=AUTH)


def test_multi_record_request_answers_each_record(client: FlaskClient) -> None:
    first = send(client, record("incoming/a.csv", seq="01"))
    assert first.status_code == 202 and len(first.json["events"]) == 1
    answer = send(
        client,
        record("incoming/a.csv", seq="01"),  # seen before: a duplicate
        record("incoming/sub/b%2Bc+d.csv", seq="02"),  # %2B is a literal plus, + a space
        record("elsewhere/c.csv", seq="03"),  # outside the entry's prefix
        record("incoming/folder/", seq="04", size=0),  # the console's "create folder"
        {**record("incoming/t.csv", seq="05"), "eventName": "ObjectTagging:Put"},
    )
    assert answer.status_code == 202
    body = answer.json
    assert body["status"] == "accepted" and body["event_id"] == body["events"][1]["event_id"]
    assert [(e["status"], e["object"]) for e in body["events"]] == [
        ("duplicate", "s3://churn-data/incoming/a.csv"),
        ("accepted", "s3://churn-data/incoming/sub/b+c d.csv"),
    ]
    assert body["events"][0]["event_id"] == first.json["event_id"]
    assert sorted(s["object"] for s in body["skipped"]) == [
        "s3://churn-data/elsewhere/c.csv",
        "s3://churn-data/incoming/folder/",
        "s3://churn-data/incoming/t.csv",
    ]
    event = client.get(f"/api/events/{body['event_id']}").json["event"]
    assert (
        event["objects"][0]["key"] == "incoming/sub/b+c d.csv"
        and event["objects"][0]["path"] == "sub/b+c d.csv"
    )


def test_same_object_with_other_contents_is_a_conflict(client: FlaskClient) -> None:
    assert send(client, record("incoming/a.csv", seq="01")).status_code == 202
    # Same bucket, key and ETag but another size: not a retry. Nothing of the request is stored,
    # not even its other, new record.
    answer = send(client, record("incoming/b.csv", seq="02"), record("incoming/a.csv", seq="01", size=4))
    assert answer.status_code == 409 and answer.json["error"] == "delivery_conflict"
    twice = send(client, record("incoming/c.csv", seq="03"), record("incoming/c.csv", seq="03", size=9))
    assert twice.status_code == 409
    assert stored(client) == (1, 1)


def test_an_older_event_arriving_late_does_not_override_a_newer_one(client: FlaskClient) -> None:
    # "FF" < "100" once left-padded (255 < 256), though "FF" > "100" as bare strings.
    assert sequencer_order("FF") < sequencer_order("100")
    removed = send(client, record("incoming/a.csv", seq="100", name="ObjectRemoved:Delete"))
    assert removed.status_code == 202
    late = send(client, record("incoming/a.csv", seq="FF"))
    assert (
        late.status_code == 200
        and late.json["status"] == "ignored"
        and late.json["reason"].startswith("stale")
    )
    assert stored(client) == (1, 1)
    newer = send(client, record("incoming/a.csv", seq="0101", etag="e2"))
    assert newer.status_code == 202 and stored(client) == (2, 1)


def batch_events(client: FlaskClient) -> list[Event]:
    with client.application.app_context(), loopline().db.session() as s:
        rows = s.scalars(select(Delivery).order_by(Delivery.received_at)).all()
        return [Event.from_dict(r.event) for r in rows]


def test_a_batch_fetches_only_the_newest_event_per_object(client: FlaskClient) -> None:
    # Within one debounced batch: a create then its removal, and two versions of one key.
    send(client, record("incoming/gone.csv", seq="10"))
    send(client, record("incoming/gone.csv", seq="11", name="ObjectRemoved:Delete"))
    send(client, record("incoming/v.csv", seq="20", etag="old"))
    send(client, record("incoming/v.csv", seq="21", etag="new"))
    send(client, record("incoming/keep.csv", seq="30"))
    events = batch_events(client)
    with client.application.app_context():
        db = loopline().db
        wanted = wanted_objects(db, events)
        assert [(o.key, o.etag) for o in wanted] == [("incoming/v.csv", "new"), ("incoming/keep.csv", "e1")]
        # Removed after the batch was taken: the older create is no longer fetched.
        send(client, record("incoming/keep.csv", seq="31", name="ObjectRemoved:Delete"))
        assert [o.key for o in wanted_objects(db, events)] == ["incoming/v.csv"]


def test_a_burst_of_storage_events_is_one_intake(client: FlaskClient) -> None:
    for i in range(20):
        assert send(client, record(f"incoming/{i}.csv", seq=f"{i + 1:02X}")).status_code == 202
    recorder = Recorder()
    with client.application.app_context():
        state = loopline()
        now = utcnow()
        assert relay_once(state.settings, state.db, recorder, now=now) == 0  # within debounce_seconds
        assert relay_once(state.settings, state.db, recorder, now=now + timedelta(seconds=31)) == 1
    assert len(recorder.intakes) == 1 and len(recorder.intakes[0]) == 20


def test_an_object_in_two_repositories_is_one_delivery_each(make_client: Factory) -> None:
    other = RepoConfig(name="other", provider="git", match="other", url="/y", data_lake=(s3("churn-data"),))
    client = make_client((LAKE, other), TOKEN)
    answer = send(client, record("incoming/a.csv", seq="01"))
    assert answer.status_code == 202
    assert [(e["repository"], e["status"]) for e in answer.json["events"]] == [
        ("lake", "accepted"),
        ("other", "accepted"),
    ]
    paths = {
        e["repository"]: client.get(f"/api/events/{e['event_id']}").json["event"]["objects"][0]["path"]
        for e in answer.json["events"]
    }
    assert paths == {"lake": "a.csv", "other": "incoming/a.csv"}


def test_envelopes_sns_and_eventbridge(client: FlaskClient) -> None:
    inner = json.dumps({"Records": [record("incoming/sns.csv", seq="01")]})
    sns = client.post(
        f"/events/s3?token={QUERY_TOKEN}",
        json={"Type": "Notification", "MessageId": "m", "Message": inner},
        headers={"x-amz-sns-message-type": "Notification"},
    )
    assert sns.status_code == 202 and sns.json["events"][0]["object"] == "s3://churn-data/incoming/sns.csv"
    bridge = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2021-11-12T00:00:00Z",
        "detail": {
            "bucket": {"name": "churn-data"},
            "object": {"key": "incoming/a b.csv", "size": 5, "etag": "b1", "sequencer": "0062E99A88DC407460"},
            "reason": "PutObject",
        },
    }
    answer = client.post("/events/s3", json=bridge, headers=AUTH)
    assert (
        answer.status_code == 202 and answer.json["events"][0]["object"] == "s3://churn-data/incoming/a b.csv"
    )
    deleted = {
        **bridge,
        "detail-type": "Object Deleted",
        "detail": {
            **bridge["detail"],
            "object": {"key": "incoming/x.csv", "sequencer": "0062E99A88DC407461"},
        },
    }
    answer = client.post("/events/s3", json=deleted, headers=AUTH)
    event = client.get(f"/api/events/{answer.json['event_id']}").json["event"]
    assert event["objects"][0]["removed"] is True
    restored = {**bridge, "detail-type": "Object Restore Completed"}
    assert client.post("/events/s3", json=restored, headers=AUTH).json["status"] == "ignored"


def test_cloudevents_carrying_s3_and_azure_events(client: FlaskClient) -> None:
    import base64

    s3_data = {"Records": [record("incoming/ce.csv", seq="01")]}
    batch = [
        {
            "specversion": "1.0",
            "id": "1",
            "source": "minio:s3",
            "type": "s3:ObjectCreated:Put",
            "data_base64": base64.b64encode(json.dumps(s3_data).encode()).decode(),
        },
        {"specversion": "1.0", "id": "2", "source": "/x", "type": "com.example.other", "data": {}},
    ]
    headers = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
    answer = client.post("/events/cloudevents", data=json.dumps(batch), headers=headers)
    assert (
        answer.status_code == 202 and answer.json["events"][0]["object"] == "s3://churn-data/incoming/ce.csv"
    )
    assert answer.json["skipped"] == [{"object": "com.example.other", "reason": "not a storage event type"}]


def test_adls_create_file_waits_for_flush_with_close(client: FlaskClient) -> None:
    body, headers = payload("azure/blobcreated-eventgrid-schema.json")
    event = json.loads(body)[0]
    event["data"].update(api="CreateFile", contentLength=0)
    answer = client.post("/events/azure", json=[event], headers={**headers, **AUTH})
    assert answer.status_code == 200 and "FlushWithClose" in answer.json["reason"]
    assert stored(client) == (0, 0)
    event["data"].update(api="FlushWithClose", contentLength=12)
    assert client.post("/events/azure", json=[event], headers={**headers, **AUTH}).status_code == 202


def s3_body(key: str = "incoming/a.csv", **obj_fields: Any) -> bytes:
    item = {"key": key, "size": 3, "eTag": "e", "sequencer": "01", **obj_fields}
    rec = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "churn-data"}, "object": item}}
    return json.dumps({"Records": [rec]}).encode()


GOOD = s3_body()
VALIDATION = (PAYLOADS / "azure/subscription-validation-event.json").read_bytes()
BLOB = json.loads((PAYLOADS / "azure/blobcreated-eventgrid-schema.json").read_bytes())
CE = {"specversion": "1.0", "id": "1", "source": "aws:s3", "type": "com.amazonaws.s3.ObjectCreated"}
JSON = {"Content-Type": "application/json"}
CE_ONE = {"Content-Type": "application/cloudevents+json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def blob(**changes: Any) -> bytes:
    return json.dumps([{**BLOB[0], **changes}]).encode()


HOSTILE: list[tuple[str, str, bytes, dict[str, str], int, str | None]] = [
    # (case, path, body, headers, status, error code; None = a 200 "ignored")
    ("no token", "/events/s3", GOOD, JSON, 401, "bad_token"),
    ("wrong bearer token", "/events/s3", GOOD, {**JSON, "Authorization": "Bearer nope"}, 401, "bad_token"),
    ("token with a suffix", "/events/s3", GOOD, {"Authorization": f"Bearer {TOKEN}x"}, 401, "bad_token"),
    ("token in a made-up header", "/events/s3", GOOD, {"X-Event-Token": TOKEN}, 401, "bad_token"),
    ("token as Basic auth", "/events/s3", GOOD, {"Authorization": f"Basic {TOKEN}"}, 401, "bad_token"),
    ("token in another query name", f"/events/s3?access_token={TOKEN}", GOOD, JSON, 401, "bad_token"),
    ("token in the body", "/events/s3", json.dumps({"token": TOKEN}).encode(), JSON, 401, "bad_token"),
    ("wrong query token", "/events/azure?token=nope", VALIDATION, {}, 401, "bad_token"),
    (
        "validation handshake without auth",
        "/events/azure",
        VALIDATION,
        {"aeg-event-type": "SubscriptionValidation"},
        401,
        "bad_token",
    ),
    ("unknown sender", "/events/gcs", GOOD, AUTH, 404, "unknown_source"),
    ("bad JSON", "/events/s3", b'{"Records": [', AUTH, 400, "malformed_payload"),
    ("not UTF-8", "/events/s3", b'{"Records": ["\xff\xfe"]}', AUTH, 400, "malformed_payload"),
    ("deep nesting", "/events/s3", b"[" * 100_000 + b"]" * 100_000, AUTH, 400, "malformed_payload"),
    ("huge key", "/events/s3", s3_body("incoming/" + "k" * 5000), AUTH, 400, "malformed_payload"),
    ("not an object", "/events/s3", b'"Records"', AUTH, 400, "malformed_payload"),
    ("a JSON array to s3", "/events/s3", b"[]", AUTH, 400, "malformed_payload"),
    ("Records not a list", "/events/s3", b'{"Records": {"s3": {}}}', AUTH, 400, "malformed_payload"),
    (
        "record without s3",
        "/events/s3",
        b'{"Records": [{"eventName": "ObjectCreated:Put"}]}',
        AUTH,
        400,
        "malformed_payload",
    ),
    ("record without a key", "/events/s3", s3_body(key=None), AUTH, 400, "malformed_payload"),  # type: ignore[arg-type]
    ("size is a string", "/events/s3", s3_body(size="3"), AUTH, 400, "malformed_payload"),
    ("size is negative", "/events/s3", s3_body(size=-1), AUTH, 400, "malformed_payload"),
    ("sequencer is not hex", "/events/s3", s3_body(sequencer="zz"), AUTH, 400, "malformed_payload"),
    ("key with ..", "/events/s3", s3_body("incoming/../../etc/passwd"), AUTH, 400, "malformed_payload"),
    ("absolute key", "/events/s3", s3_body("%2Fetc%2Fpasswd"), AUTH, 400, "malformed_payload"),
    ("key with NUL", "/events/s3", s3_body("incoming/a%00.csv"), AUTH, 400, "malformed_payload"),
    ("key with a newline", "/events/s3", s3_body("incoming/a%0A.csv"), AUTH, 400, "malformed_payload"),
    (
        "SQS body not JSON",
        "/events/s3",
        b'{"Records": [{"eventSource": "aws:sqs", "body": "{nope"}]}',
        AUTH,
        400,
        "malformed_payload",
    ),
    ("azure: not an event", "/events/azure", b"[1]", AUTH, 400, "malformed_payload"),
    ("azure: subject names no blob", "/events/azure", blob(subject="/x"), AUTH, 400, "malformed_payload"),
    (
        "azure: blob named ..",
        "/events/azure",
        blob(subject="/blobServices/default/containers/test-container/blobs/../x"),
        AUTH,
        400,
        "malformed_payload",
    ),
    (
        "azure: validation without a code",
        "/events/azure",
        b'[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]',
        AUTH,
        400,
        "malformed_payload",
    ),
    (
        "cloudevents: no specversion",
        "/events/cloudevents",
        json.dumps({**CE, "specversion": None}).encode(),
        {**AUTH, **CE_ONE},
        400,
        "malformed_payload",
    ),
    (
        "cloudevents: batch type, one event",
        "/events/cloudevents",
        json.dumps(CE).encode(),
        {**AUTH, **CE_BATCH},
        400,
        "malformed_payload",
    ),
    (
        "cloudevents: data and data_base64",
        "/events/cloudevents",
        json.dumps({**CE, "data": {}, "data_base64": "e30="}).encode(),
        {**AUTH, **CE_ONE},
        400,
        "malformed_payload",
    ),
    (
        "cloudevents: bad base64",
        "/events/cloudevents",
        json.dumps({**CE, "data_base64": "!!"}).encode(),
        {**AUTH, **CE_ONE},
        400,
        "malformed_payload",
    ),
    # Understood and deliberately not acted on: 200, nothing stored.
    (
        "s3: tagging event",
        "/events/s3",
        GOOD.replace(b"ObjectCreated:Put", b"ObjectTagging:Put"),
        AUTH,
        200,
        None,
    ),
    ("s3: empty Records", "/events/s3", b'{"Records": []}', AUTH, 200, None),
    (
        "eventbridge: another service",
        "/events/s3",
        b'{"detail-type": "EC2 Instance State-change", "source": "aws.ec2"}',
        AUTH,
        200,
        None,
    ),
    (
        "SNS subscription confirmation",
        "/events/s3",
        b'{"Type": "SubscriptionConfirmation", "SubscribeURL": "http://evil"}',
        AUTH,
        200,
        None,
    ),
    ("outside every data_lake entry", "/events/s3", s3_body("elsewhere/a.csv"), AUTH, 200, None),
    ("bucket nobody registered", "/events/s3", GOOD.replace(b"churn-data", b"other-data"), AUTH, 200, None),
    (
        "azure: tier changed",
        "/events/azure",
        blob(eventType="Microsoft.Storage.BlobTierChanged"),
        AUTH,
        200,
        None,
    ),
    (
        "azure: subscription deletion",
        "/events/azure",
        blob(),
        {**AUTH, "aeg-event-type": "SubscriptionDeletion"},
        200,
        None,
    ),
    (
        "cloudevents: unknown type",
        "/events/cloudevents",
        json.dumps({**CE, "type": "com.example.x"}).encode(),
        {**AUTH, **CE_ONE},
        200,
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_requests_store_nothing(
    client: FlaskClient, case: str, path: str, body: bytes, headers: dict, status: int, code: str | None
) -> None:
    answer = client.post(path, data=body, headers=headers)
    assert answer.status_code == status, answer.json
    if code is None:
        assert answer.json["status"] == "ignored" and answer.json["reason"]
    else:
        assert answer.json["error"] == code and answer.json["message"]
    assert stored(client) == (0, 0)
    with client.application.app_context():
        state = loopline()
        assert relay_once(state.settings, state.db, Recorder(), now=utcnow() + timedelta(days=1)) == 0
