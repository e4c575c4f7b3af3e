"""``/healthz`` for liveness probes and ``/metrics`` in Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select

from service.state import loopline
from store import telemetry
from store.models import Delivery, Probe, Run, utcnow

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Healthy only when the store takes a write (a full disk reads fine and writes nothing)."""
    try:
        with loopline().db.session() as s:
            s.merge(Probe(name="web", at=utcnow()))
    except Exception as exc:  # the probe must answer, whatever the store does
        return jsonify(status="unhealthy", store=str(exc)[:200]), 503
    return jsonify(status="ok"), 200


@bp.get("/metrics")
def metrics() -> Response:
    lines = ["# HELP loopline_deliveries Deliveries by status.", "# TYPE loopline_deliveries gauge"]
    with loopline().db.session() as s:
        for status, count in s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)):
            lines.append(f'loopline_deliveries{{status="{status}"}} {count}')
        lines += ["# HELP loopline_runs Runs by status.", "# TYPE loopline_runs gauge"]
        for status, count in s.execute(select(Run.status, func.count()).group_by(Run.status)):
            lines.append(f'loopline_runs{{status="{status}"}} {count}')
        lines += telemetry.exposition(s)
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
