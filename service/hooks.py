"""``POST /hooks/<provider>``: Git webhooks. Verify, parse, store, acknowledge.

A deletion is never stored as work: it cancels the runs of that ref that have not started and
is answered ``200 ignored`` with their ids. A delivery reporting several ref updates (Bitbucket)
stores one delivery per update, ``<delivery id>#<position>``.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from pipelines.config import RepoConfig
from pipelines.events import Event
from pipelines.providers import PROVIDERS
from service.errors import Conflict, NotFound, Unauthorized
from service.state import loopline
from store.deliveries import record_delivery
from store.runs import cancel_branch

bp = Blueprint("hooks", __name__)


def _candidates(provider: str) -> list[RepoConfig]:
    return [r for r in loopline().settings.repositories if r.provider == provider]


@bp.post("/hooks/<provider>")
def receive(provider: str) -> tuple[Response, int]:
    dialect = PROVIDERS.get(provider)
    if dialect is None:
        raise NotFound(f"unknown provider {provider[:100]!r}", "unknown_provider")
    state = loopline()
    candidates = _candidates(provider)
    if not candidates:
        raise NotFound(f"no repository is registered for provider {provider!r}", "unknown_repository")
    body = request.get_data(cache=False)
    headers = request.headers
    secrets = state.settings.secrets
    # The signature is checked on the raw bytes before anything parses them.
    verified = {
        r.name for r in candidates if r.name in secrets and dialect.verify(headers, body, secrets[r.name])
    }
    unsigned_ok = {r.name for r in candidates if r.name not in secrets}
    if not verified and not unsigned_ok:
        raise Unauthorized("missing or invalid signature", "bad_signature")
    events = dialect.parse(headers, body)
    repo = next((r for r in candidates if r.match == events[0].repository), None)
    if repo is None:
        raise NotFound(f"repository {events[0].repository[:200]!r} is not registered", "unknown_repository")
    if repo.name not in verified and repo.name not in unsigned_ok:
        raise Unauthorized("missing or invalid signature", "bad_signature")
    delivery = dialect.delivery_id(headers, body)
    work = [(i, e) for i, e in enumerate(events) if not e.deleted]
    # Stored first: a conflicting redelivery (409) changes nothing, not even a cancellation.
    answer = _store(provider, repo.name, delivery, body, work, several=len(events) > 1) if work else None
    cancelled = [
        run_id
        for event in events
        if event.deleted
        for run_id in cancel_branch(state.db, repo.name, event.ref or "", reason=f"{event.ref} was deleted")
    ]
    if answer is None:
        refs = ", ".join(e.ref or "" for e in events)
        reason = f"{refs} deleted: a deletion never starts a pipeline"
        return jsonify(status="ignored", reason=reason, cancelled_run_ids=cancelled), 200
    if len(work) < len(events):
        answer["cancelled_run_ids"] = cancelled
    return jsonify(answer), 202 if answer["status"] == "accepted" else 200


def _store(
    provider: str,
    repository: str,
    delivery: str,
    body: bytes,
    work: list[tuple[int, Event]],
    *,
    several: bool,
) -> dict[str, object]:
    """Record each event as a delivery; ``accepted`` if any of them is new."""
    ids, fresh = [], False
    for position, event in work:
        recorded = record_delivery(
            loopline().db,
            provider=provider,
            delivery_id=f"{delivery}#{position}" if several else delivery,
            body=body,
            repository=repository,
            event=event,
        )
        if recorded.status == "conflict":
            raise Conflict("this delivery id was already received with a different body", "delivery_conflict")
        ids.append(recorded.event_id)
        fresh = fresh or recorded.status == "accepted"
    answer: dict[str, object] = {"event_id": ids[0], "status": "accepted" if fresh else "duplicate"}
    if several:
        answer["event_ids"] = ids
    return answer
