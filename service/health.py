"""``/healthz`` for liveness probes and ``/metrics`` in Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service.metrics import exposition
from service.state import loopline

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Healthy only when the store takes a write (a full disk reads fine and writes nothing)."""
    try:
        loopline().db.probe("web")
    except Exception as exc:  # the probe must answer, whatever the store does
        return jsonify(status="unhealthy", store=str(exc)[:200]), 503
    return jsonify(status="ok"), 200


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = exposition(loopline().db)
    return Response(body, content_type=content_type)
