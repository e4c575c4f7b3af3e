"""Human actions (approve, reject, cancel, retry), allowed only with ``LOOPLINE_API_TOKEN``."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from service.errors import ApiError, Conflict, NotFound, Unauthorized
from service.state import loopline
from store import runs, views
from store.models import Run

bp = Blueprint("actions", __name__, url_prefix="/api")


class Forbidden(ApiError):
    status, code = 403, "actions_disabled"


def _actor() -> str:
    """Check the bearer token; returns who acted (``X-Loopline-User`` or "api")."""
    token = loopline().settings.api_token
    if not token:
        raise Forbidden("human actions are disabled: set LOOPLINE_API_TOKEN on the server")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("missing or wrong API token", "bad_token")
    return (request.headers.get("X-Loopline-User") or "api")[:100]


def _comment() -> str | None:
    body = request.get_json(silent=True)
    if body is None:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("comment", ""), str):
        raise ApiError('body must be {"comment": "..."}', "bad_body")
    return body.get("comment") or None


def _act(action: str, run_id: int) -> Response:
    by = _actor()
    comment = _comment()
    db = loopline().db
    try:
        if action == "cancel":
            runs.cancel(db, run_id, by=by, reason=comment)
        elif action == "retry":
            run_id = runs.retry(db, run_id, by=by).id
        else:
            getattr(runs, action)(db, run_id, by=by, comment=comment)
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except runs.InvalidAction as exc:
        raise Conflict(str(exc), "invalid_state") from exc
    with db.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        response = jsonify(views.run_dict(run))
    if action == "retry":
        response.status_code = 201
        response.headers["Location"] = f"/api/runs/{run_id}"
    return response


@bp.post("/runs/<int:run_id>/approve")
def approve(run_id: int) -> Response:
    return _act("approve", run_id)


@bp.post("/runs/<int:run_id>/reject")
def reject(run_id: int) -> Response:
    return _act("reject", run_id)


@bp.post("/runs/<int:run_id>/cancel")
def cancel(run_id: int) -> Response:
    return _act("cancel", run_id)


@bp.post("/runs/<int:run_id>/retry")
def retry(run_id: int) -> Response:
    """A new attempt of a failed, gate-failed or cancelled run: 201 with the new run."""
    return _act("retry", run_id)
