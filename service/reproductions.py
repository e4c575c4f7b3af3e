"""Reproductions over HTTP: ask a worker to rebuild a model version from its lineage alone, and
read what it found. The web process only stores the request: the relay publishes it to the
trainer's queue, like every other piece of work (``store/reproductions.py``). A rebuild's whole
log is read from the object storage its worker stored it in: the hosts share no disk."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from service.auth import require
from service.errors import ApiError, Conflict, NotFound
from service.state import loopline
from store import registry, reproductions, stagelogs
from store.blobs import BlobError, open_store
from store.lifecycle import REPRODUCTION_TERMINAL

bp = Blueprint("reproductions", __name__, url_prefix="/api")


class StorageUnavailable(ApiError):
    status, code = 503, "storage_unavailable"


@bp.post("/models/<name>/versions/<int:version>/reproduce")
def reproduce(name: str, version: int) -> tuple[Response, int]:
    """202 with the queued reproduction and its ``Location``; an ``Idempotency-Key`` header
    makes a repeat answer 200 with the same reproduction. The body, if any, must be ``{}``."""
    by = require("reproduce").name
    if request.get_data() and request.get_json(silent=True) != {}:
        raise ApiError("this request takes no body (or {})", "bad_body")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 100:
        raise ApiError("Idempotency-Key is 1 to 100 characters", "bad_header")
    state = loopline()
    try:
        asked = reproductions.request(
            state.db,
            name,
            version,
            by=by,
            key=key,
            repositories={r.name for r in state.settings.repositories},
        )
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except reproductions.NoLineage as exc:
        raise Conflict(str(exc), "no_lineage") from exc
    except reproductions.KeyReused as exc:
        raise Conflict(str(exc), "idempotency_conflict") from exc
    answer = jsonify(asked.record)
    answer.headers["Location"] = asked.record["url"]
    return answer, 202 if asked.created else 200


@bp.get("/reproductions/<int:reproduction_id>")
def reproduction(reproduction_id: int) -> Response:
    with loopline().db.session() as s:
        found = reproductions.get(s, reproduction_id)
        if found is None:
            raise NotFound(f"no reproduction {reproduction_id}")
        return jsonify(reproductions.as_dict(found))


@bp.get("/reproductions/<int:reproduction_id>/log")
def reproduction_log(reproduction_id: int) -> Response:
    """The rebuild's whole log (plain text), once the reproduction ended; 404 before. When the
    object storage has none (it ended before rebuilding, or refused the log) or cannot be read,
    the store's tail, as for a stage's log; 503 if that is empty too."""
    with loopline().db.session() as s:
        found = reproductions.get(s, reproduction_id)
        if found is None:
            raise NotFound(f"no reproduction {reproduction_id}")
        status, tail = found.status, found.log or ""
    if status not in REPRODUCTION_TERMINAL:
        raise NotFound(f"reproduction {reproduction_id} is {status}: it has a log once it ends")
    key = stagelogs.reproduction(reproduction_id)
    try:
        data = open_store(loopline().settings.storage).get_named(key)
    except (BlobError, OSError) as exc:
        current_app.logger.warning("reproduction log %s: %s; serving its tail", key, exc)
        if not tail:
            raise StorageUnavailable("the object storage cannot be read; retry later") from exc
        data = None
    if data is None and not tail:
        raise NotFound(f"reproduction {reproduction_id} {status} without a log")
    return Response(tail if data is None else data, mimetype="text/plain")


@bp.get("/models/<name>/versions/<int:version>/reproductions")
def of_version(name: str, version: int) -> Response:
    """The version's reproductions, newest first (at most 50)."""
    with loopline().db.session() as s:
        if registry.model_version(s, name, version) is None:
            raise NotFound(f"no version {version} of model {name[:64]!r}")
        rows = [reproductions.as_dict(r) for r in reproductions.of_version(s, name, version)]
    return jsonify(model=name, version=version, reproductions=rows)
