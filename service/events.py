"""``POST /events/s3|azure|cloudevents``: object-storage notifications.

Authenticate (``LOOPLINE_EVENT_TOKEN``), parse, match every object to the repositories whose
``data_lake`` holds it, store one delivery per (repository, object), acknowledge. A request may
report many objects: it is checked whole (conflicts) before any of them is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Response, jsonify, request

from pipelines.config import RepoConfig, lake_matches
from pipelines.events import DataObject, Event
from service.errors import ApiError, Conflict, NotFound, Unauthorized
from service.state import Loopline, loopline
from service.storage import PARSERS, Notification
from store import deliveries, objects

bp = Blueprint("events", __name__)
STALE = "stale: a newer event for this object was already received"


class EventsDisabled(ApiError):
    status, code = 403, "events_disabled"


@dataclass(frozen=True)
class _Planned:
    repository: str
    item: DataObject
    delivery_id: str
    body: bytes  # the object's identity, hashed to tell a redelivery from a conflict


def _authenticate() -> None:
    """``Authorization: Bearer <token>`` or ``?token=<token>``, compared in constant time.

    Storage senders cannot sign bodies, so without a configured token nothing is accepted.
    """
    token = loopline().settings.event_token
    if not token:
        raise EventsDisabled("storage events are refused: set LOOPLINE_EVENT_TOKEN on the server")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.args.get("token", "")
    if not given or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized(
            "missing or wrong event token: send Authorization: Bearer <token> or ?token=<token>", "bad_token"
        )


@bp.post("/events/<sender>", provide_automatic_options=False)
def receive(sender: str) -> tuple[Response, int]:
    parser = PARSERS.get(sender)
    if parser is None:
        raise NotFound(f"unknown event source {sender[:50]!r}: use {', '.join(PARSERS)}", "unknown_source")
    _authenticate()
    found: Notification = parser.parse(request.headers, request.get_data(cache=False))
    return _store(loopline(), found)


@bp.route("/events/<sender>", methods=["OPTIONS"])
def abuse_protection(sender: str) -> Response:
    """The CloudEvents webhook handshake Event Grid uses for CloudEvents-schema subscriptions."""
    if sender not in PARSERS or not PARSERS[sender].HANDSHAKE:
        raise NotFound(f"no handshake for {sender[:50]!r}", "unknown_source")
    _authenticate()
    origin = request.headers.get("WebHook-Request-Origin", "").strip()
    if not origin:
        raise ApiError("missing header WebHook-Request-Origin", "missing_header")
    return Response(status=200, headers={"WebHook-Allowed-Origin": origin[:255], "WebHook-Allowed-Rate": "*"})


def delivery_id(repository: str, item: DataObject) -> str:
    """One delivery per (repository, bucket, key, version or ETag): a retried notification, or
    the same bytes uploaded again, is a duplicate. Removals have no ETag: version or sequencer."""
    tag = item.version or (None if item.removed else item.etag) or item.sequencer or item.event_time or ""
    where = f"{item.account}/{item.bucket}" if item.account else item.bucket
    name = f"{repository}:{'removed' if item.removed else 'created'}:{where}/{item.key}@{tag}"
    return (
        name if len(name) <= 200 else "sha256:" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()
    )


def _identity(item: DataObject) -> bytes:
    """What must not differ between two deliveries with one id (sequencer and time may)."""
    fields = (
        item.store,
        item.account,
        item.bucket,
        item.key,
        item.size,
        item.etag,
        item.version,
        item.removed,
    )
    return json.dumps(fields).encode()


def _plan(repos: tuple[RepoConfig, ...], found: Notification) -> tuple[list[_Planned], list[dict[str, str]]]:
    skipped = [{"object": what[:1100], "reason": why} for what, why in found.skipped]
    stores = {item.store for item in found.objects}
    if stores and not any(
        (entry.s3 and "s3" in stores) or (entry.azure and "azure" in stores)
        for repo in repos
        for entry in repo.data_lake
    ):
        raise NotFound(
            f"no registered repository has a {' or '.join(sorted(stores))} data_lake entry",
            "unknown_repository",
        )
    planned: list[_Planned] = []
    for item in found.objects:
        matches = lake_matches(repos, item)
        if not matches:
            skipped.append({"object": item.url, "reason": "outside every repository's data_lake entries"})
        for repository, path in matches:
            placed = replace(item, path=path)
            planned.append(_Planned(repository, placed, delivery_id(repository, placed), _identity(placed)))
    return planned, skipped


def _store(state: Loopline, found: Notification) -> tuple[Response, int]:
    planned, skipped = _plan(state.settings.repositories, found)
    digests: dict[tuple[str, str], str] = {}
    for p in planned:
        digest = hashlib.sha256(p.body).hexdigest()
        if digests.setdefault((p.item.store, p.delivery_id), digest) != digest:
            raise Conflict(
                f"{p.item.url[:200]} is reported twice with different contents", "delivery_conflict"
            )
    known: dict[tuple[str, str], tuple[str, str]] = {}
    for store in {p.item.store for p in planned}:
        ids = [d for s, d in digests if s == store]
        known.update({(store, d): v for d, v in deliveries.seen(state.db, store, ids).items()})
    for key, (_, digest) in known.items():
        if digests[key] != digest:
            raise Conflict(
                f"delivery {key[1][:200]!r} was already received with other contents", "delivery_conflict"
            )
    events: list[dict[str, Any]] = []
    for p in planned:
        prior = known.get((p.item.store, p.delivery_id))
        if prior is not None:
            events.append(_entry(prior[0], "duplicate", p))
            continue
        if not objects.advance(state.db, p.item):
            skipped.append({"object": p.item.url, "reason": STALE})
            continue
        event = Event(type="data", repository=p.repository, objects=(p.item,))
        recorded = deliveries.record_delivery(
            state.db,
            provider=p.item.store,
            delivery_id=p.delivery_id,
            body=p.body,
            repository=p.repository,
            event=event,
        )
        if recorded.status == "conflict":  # lost a race with another request for the same id
            raise Conflict(
                f"delivery {p.delivery_id[:200]!r} was received with other contents", "delivery_conflict"
            )
        events.append(_entry(recorded.event_id, recorded.status, p))
    accepted = [e for e in events if e["status"] == "accepted"]
    if accepted:
        return jsonify(
            event_id=accepted[0]["event_id"], status="accepted", events=events, skipped=skipped
        ), 202
    if events:
        return jsonify(
            event_id=events[0]["event_id"], status="duplicate", events=events, skipped=skipped
        ), 200
    reason = skipped[0]["reason"] if skipped else "no objects"
    return jsonify(status="ignored", reason=reason, skipped=skipped), 200


def _entry(event_id: str, status: str, p: _Planned) -> dict[str, Any]:
    return {"event_id": event_id, "status": status, "repository": p.repository, "object": p.item.url}
