"""``POST /hooks/<provider>``: Git webhooks. Verify, parse, store, acknowledge."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from pipelines.config import RepoConfig
from service.dialects import DIALECTS
from service.errors import Conflict, NotFound, Unauthorized
from service.state import loopline
from store.deliveries import record_delivery

bp = Blueprint("hooks", __name__)


def _candidates(provider: str) -> list[RepoConfig]:
    return [r for r in loopline().settings.repositories if r.provider == provider]


@bp.post("/hooks/<provider>")
def receive(provider: str) -> tuple[Response, int]:
    dialect = DIALECTS.get(provider)
    if dialect is None:
        raise NotFound(f"unknown provider {provider!r}", "unknown_provider")
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
    event = dialect.parse(headers, body)
    repo = next((r for r in candidates if r.match == event.repository), None)
    if repo is None:
        raise NotFound(f"repository {event.repository[:200]!r} is not registered", "unknown_repository")
    if repo.name not in verified and repo.name not in unsigned_ok:
        raise Unauthorized("missing or invalid signature", "bad_signature")
    recorded = record_delivery(
        state.db,
        provider=provider,
        delivery_id=dialect.delivery_id(headers, body),
        body=body,
        repository=repo.name,
        event=event,
    )
    if recorded.status == "conflict":
        raise Conflict("this delivery id was already received with a different body", "delivery_conflict")
    if recorded.status == "duplicate":
        return jsonify(event_id=recorded.event_id, status="duplicate"), 200
    return jsonify(event_id=recorded.event_id, status="accepted"), 202
