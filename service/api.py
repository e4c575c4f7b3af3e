"""``/api``: runs, stages and logs, deliveries, the model registry and deployments."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request

from service.errors import ApiError, NotFound
from service.state import loopline
from store import registry, releases, stagelogs, telemetry, views
from store.blobs import BlobError, open_store

bp = Blueprint("api", __name__, url_prefix="/api")


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ApiError(f"{name} must be a positive integer", "bad_parameter")
    return min(int(raw), maximum)


@bp.get("/events/<event_id>")
def event(event_id: str) -> Response:
    with loopline().db.session() as s:
        found = views.event(s, event_id[:64])
    if found is None:
        raise NotFound(f"no event {event_id[:64]!r}")
    return jsonify(found)


@bp.get("/runs")
def runs() -> Response:
    args, limit = request.args, _int_arg("limit", 50, 500)
    with loopline().db.session() as s:
        found = views.runs(
            s,
            repository=args.get("repo"),
            branch=args.get("branch"),
            status=args.get("status"),
            trigger=args.get("trigger"),
            limit=limit,
        )
    return jsonify(runs=found)


@bp.get("/runs/<int:run_id>")
def run(run_id: int) -> Response:
    with loopline().db.session() as s:
        found = views.run(s, run_id)
    if found is None:
        raise NotFound(f"no run {run_id}")
    return jsonify(found)


@bp.get("/runs/<int:run_id>/stages/<name>/log")
def stage_log(run_id: int, name: str) -> Response:
    """A stage's log (plain text). ``?after=N`` answers only what follows byte N and, while the
    stage runs, waits up to ``wait`` seconds (at most 20) for more: the long poll the dashboard
    follows a log with. ``X-Log-Offset`` is where the next read starts."""
    after, wait = _int_arg("after", 0, 2**40), _int_arg("wait", 0, 20)
    deadline = time.monotonic() + wait
    while True:
        data, running = _log(run_id, name)
        if len(data) > after or not running or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    response = Response(data[after:], mimetype="text/plain")
    response.headers["X-Log-Offset"] = str(len(data))
    return response


def _log(run_id: int, name: str) -> tuple[bytes, bool]:
    """The stage's log so far, and whether it still runs. A finished stage's log is read from
    object storage; a running stage's worker copies the tail of its log into the store about
    once a second (hosts share no disk); the file is read only when this host has it and the
    store has nothing yet."""
    with loopline().db.session() as s:
        found = views.stage_log(s, run_id, name)
    if found is None:
        raise NotFound(f"run {run_id} has no stage {name[:40]!r}")
    text, status, key = found
    if key:
        try:
            return stagelogs.load(open_store(loopline().settings.storage), key), False
        except BlobError as exc:  # the store's tail, rather than nothing
            current_app.logger.warning("stage log %s: %s; serving its tail", key, exc)
    if text:
        return text.encode(), status in ("queued", "running")
    live = Path(loopline().settings.home) / "logs" / str(run_id) / f"{name}.log"
    return (live.read_bytes() if live.exists() else b""), status in ("queued", "running")


@bp.get("/models")
def models() -> Response:
    with loopline().db.session() as s:
        return jsonify(models=views.models_summary(s))


@bp.get("/models/<name>")
def model(name: str) -> Response:
    """Aliases, live releases with their traffic and telemetry, and the history of alias moves."""
    with loopline().db.session() as s:
        if not registry.known(s, name):
            raise NotFound(f"no model {name[:64]!r}")
        return jsonify(releases.state(s, name))


@bp.get("/models/<name>/telemetry")
def model_telemetry(name: str) -> Response:
    """What the serving gateway measured for the model's ten newest releases."""
    with loopline().db.session() as s:
        deps = registry.deployments(s, name, limit=10)
        if not deps:
            raise NotFound(f"model {name[:64]!r} was never deployed")
        numbers = telemetry.stats(s, [d.id for d in deps])
        return jsonify(model=name, releases=[releases.release_dict(d, numbers[d.id]) for d in deps])


@bp.get("/models/<name>/versions")
def versions(name: str) -> Response:
    with loopline().db.session() as s:
        rows = views.model_versions(s, name)
    if not rows:
        raise NotFound(f"no model {name[:64]!r}")
    return jsonify(versions=rows)


@bp.get("/models/<name>/versions/<int:version>")
def version(name: str, version: int) -> Response:
    with loopline().db.session() as s:
        mv = registry.model_version(s, name, version)
        if mv is None:
            raise NotFound(f"no version {version} of model {name[:64]!r}")
        lineage = views.chain(s, mv, registry.latest_deployment(s, name, version))
        return jsonify({**views.model_dict(mv), "lineage": lineage})


@bp.get("/deployments/current")
def current_deployment() -> Response:
    model = request.args.get("model")
    if not model:
        raise ApiError("query parameter 'model' is required", "missing_parameter")
    with loopline().db.session() as s:
        dep = registry.current_deployment(s, model)
        if dep is None:
            raise NotFound(f"model {model[:64]!r} is not deployed")
        return jsonify(views.lineage(s, dep))
