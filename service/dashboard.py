"""``GET /``: the dashboard, a static page that reads the JSON API; and the two views only it
needs: a model's release timeline and its traffic over time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify, render_template, request

from service.errors import ApiError, NotFound
from service.state import loopline
from store import registry, timeline

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

bp = Blueprint(
    "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)


@bp.get("/")
def index() -> str:
    return render_template("dashboard.html", flower_url=loopline().settings.flower_url)


def _known(s: Session, name: str) -> None:
    if not registry.known(s, name):
        raise NotFound(f"no model {name[:64]!r}")


@bp.get("/api/models/<name>/timeline")
def model_timeline(name: str) -> Response:
    """Every version with its trigger, diff from the previous one, gate, approval and releases."""
    with loopline().db.session() as s:
        _known(s, name)
        return jsonify(timeline.timeline(s, name))


@bp.get("/api/models/<name>/data")
def model_data(name: str) -> Response:
    """The data batches of the model's repository: rows, problems and drift per feature."""
    with loopline().db.session() as s:
        _known(s, name)
        return jsonify(timeline.data(s, name))


@bp.get("/api/models/<name>/traffic")
def model_traffic(name: str) -> Response:
    """Request rate, errors and latency per release over ``minutes`` (default 60, at most a
    week), and which applications call which versions."""
    raw = request.args.get("minutes", "60")
    if not raw.isdigit() or not 1 <= int(raw) <= 7 * 24 * 60:
        raise ApiError("minutes must be an integer from 1 to 10080", "bad_parameter")
    with loopline().db.session() as s:
        _known(s, name)
        return jsonify(timeline.traffic(s, name, int(raw)))
