"""Human actions on runs (approve, reject, cancel, retry) and releases (promote, rollback), by
named users with a role (``loopline users add``) or the bootstrap admin (``LOOPLINE_API_TOKEN``).

Approvers decide on runs; admins also promote and roll back. ``GET /api/me`` tells the
dashboard's sign-in form whose token it holds.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, request

from service.auth import authenticate, require
from service.errors import ApiError, Conflict, NotFound
from service.state import loopline
from store import registry, releases, runs, users, views

if TYPE_CHECKING:
    from store.models import Deployment

bp = Blueprint("actions", __name__, url_prefix="/api")


@bp.get("/me")
def me() -> Response:
    """Whose token this is and what their role lets them do (the dashboard's sign-in check)."""
    actor = authenticate()
    return jsonify(name=actor.name, role=actor.role, may=sorted(a for a in users.NEEDS if actor.may(a)))


_BODY = 'body must be {"comment": "...", "commit": "<sha>", "model_version": <int>} (all optional)'


def _body() -> dict[str, Any]:
    """The optional JSON body: a comment, and (approve) the commit and model version meant."""
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict) or set(body) - {"comment", "commit", "model_version"}:
        raise ApiError(_BODY, "bad_body")
    comment, commit, version = body.get("comment"), body.get("commit"), body.get("model_version")
    if not (
        isinstance(comment, str | None)
        and (commit is None or (isinstance(commit, str) and 7 <= len(commit) <= 64))
        and (version is None or (isinstance(version, int) and not isinstance(version, bool)))
    ):
        raise ApiError(_BODY, "bad_body")
    return {"comment": (comment or None) and comment[:2000], "commit": commit, "model_version": version}


def _act(action: str, run_id: int) -> Response:
    by = require(action).name
    body = _body()
    db = loopline().db
    try:
        if action == "cancel":
            runs.cancel(db, run_id, by=by, reason=body.get("comment"))
        elif action == "retry":
            run_id = runs.retry(db, run_id, by=by).id
        elif action == "approve":
            runs.approve(db, run_id, by=by, **body)
        else:
            runs.reject(db, run_id, by=by, comment=body.get("comment"))
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except runs.ApprovalMismatch as exc:
        raise Conflict(str(exc), "approval_mismatch") from exc
    except runs.InvalidAction as exc:
        raise Conflict(str(exc), "invalid_state") from exc
    with db.session() as s:
        found = views.run(s, run_id)
    assert found is not None
    response = jsonify(found)
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


@bp.post("/models/<name>/versions/<int:version>/promote")
def promote(name: str, version: int) -> Response:
    """Send all of the model's traffic to the running release of ``version`` and move
    ``production`` there. A version with no running release is started by the CLI
    (``loopline models promote``), which the web process leaves to the server's host."""
    by, comment = f"user:{require('promote').name}", _body()["comment"]
    with loopline().db.session() as s:
        if registry.model_version(s, name, version) is None:
            raise NotFound(f"no version {version} of model {name[:64]!r}")
        target = releases.live_release(s, name, version)
        if target is None:
            raise Conflict(
                f"{name} v{version} has no running release; `loopline models promote {name} {version}` "
                "on the server starts one",
                "release_not_running",
            )
        if target.status != "active":
            _check_running(target)
            releases.promote(s, target, actor=by, reason=comment or "promoted")
        return jsonify(releases.state(s, name))


@bp.post("/models/<name>/rollback")
def rollback(name: str) -> Response:
    """Abort the canary on trial, else switch back to the standby (the previous production)."""
    by, comment = f"user:{require('rollback').name}", _body()["comment"]
    with loopline().db.session() as s:
        if not releases.live(s, name):
            raise NotFound(f"model {name[:64]!r} is not deployed")
        target = releases.rollback_target(s, name)
        if target.status == "standby":
            _check_running(target)
        releases.rollback(s, target, actor=by, reason=comment)
        return jsonify(releases.state(s, name))


def _check_running(dep: Deployment) -> None:
    """The release's process must still listen: the switch has to be instant."""
    releases.switchable(dep)
    parts = urlsplit(dep.url or "")
    try:
        socket.create_connection((parts.hostname or "", parts.port or 80), timeout=1).close()
    except OSError as exc:
        raise Conflict(
            f"release #{dep.id} (v{dep.version}) is not running ({exc}); `loopline models rollback "
            f"{dep.model_name}` (or promote) on the server restarts it from its release directory",
            "release_not_running",
        ) from exc
