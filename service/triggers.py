"""``POST /api/repos/<name>/runs``: a manual run (GitHub's ``workflow_dispatch``, Buildbot's force
scheduler), stored as a trigger delivery so it is planned, gated and approved like any other."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request

from pipelines.events import valid_ref
from service.auth import require
from service.errors import ApiError, Conflict, NotFound
from service.state import loopline
from store.triggers import request_run

bp = Blueprint("triggers", __name__, url_prefix="/api")

_BODY = 'body must be {"branch": "<name>", "reason": "..."} (both optional)'


@bp.post("/repos/<name>/runs")
def manual_run(name: str) -> tuple[Response, int]:
    """202 with the delivery's id once stored; its run shows at ``/api/events/<id>``.

    An ``Idempotency-Key`` header makes a repeated request answer ``200 duplicate``.
    """
    by = require("run").name
    state = loopline()
    repo = state.settings.repo(name)
    if repo is None:
        raise NotFound(f"repository {name[:64]!r} is not registered", "unknown_repository")
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict) or set(body) - {"branch", "reason"}:
        raise ApiError(_BODY, "bad_body")
    branch, reason = body.get("branch", repo.default_branch), body.get("reason")
    if not isinstance(branch, str) or not valid_ref(f"refs/heads/{branch}"):
        raise ApiError(f"branch must be a valid branch name; {_BODY}", "bad_body")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(_BODY, "bad_body")
    key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
    if len(key) > 100:
        raise ApiError("Idempotency-Key is at most 100 characters", "bad_header")
    recorded = request_run(
        state.db,
        repository=repo.name,
        trigger="manual",
        ref=f"refs/heads/{branch}",
        reason=f"manual run by {by}" + (f": {reason}" if reason else ""),
        key=key,
    )
    if recorded.status == "conflict":
        raise Conflict("this Idempotency-Key was used for another request", "delivery_conflict")
    answer = jsonify(
        event_id=recorded.event_id, status=recorded.status, event=f"/api/events/{recorded.event_id}"
    )
    return answer, 202 if recorded.status == "accepted" else 200
