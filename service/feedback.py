"""``POST /api/models/<name>/feedback``: true labels for the gateway's answers, by request id.

Online accuracy per release comes from here (telemetry, ``/metrics``, ``triggers.performance``).
No token: a request id (``X-Loopline-Request-Id``, 128 random bits) is only known to whoever got
the answer, so knowing one is the permission to label it, once.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.errors import ApiError, NotFound
from service.state import loopline
from store import outcomes, registry

bp = Blueprint("feedback", __name__, url_prefix="/api")

MAX_ITEMS = 1000
_ID = re.compile(r"^[0-9a-f]{32}\Z")
_BODY = (
    'body must be {"feedback": [{"request_id": "<X-Loopline-Request-Id>", "label": <value>}, ...]} '
    f'(or "labels": [...] for an answer with several predictions; at most {MAX_ITEMS} items)'
)


def _label(value: Any) -> str:
    """A label as the gateway stored the prediction's (see ``service.gateway._labels``)."""
    if isinstance(value, str | int | float) and value is not None:
        return str(value)[:64]
    raise ApiError(_BODY, "bad_body")


def _truths(body: Any) -> dict[str, tuple[str, ...]]:
    items = body.get("feedback") if isinstance(body, dict) and set(body) == {"feedback"} else None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise ApiError(_BODY, "bad_body")
    truths: dict[str, tuple[str, ...]] = {}
    for item in items:
        if not isinstance(item, dict) or len(item) != 2 or not _ID.match(str(item.get("request_id", ""))):
            raise ApiError(_BODY, "bad_body")
        if "label" in item:
            labels: tuple[str, ...] = (_label(item["label"]),)
        elif isinstance(item.get("labels"), list) and item["labels"]:
            labels = tuple(_label(v) for v in item["labels"])
        else:
            raise ApiError(_BODY, "bad_body")
        truths[item["request_id"]] = labels
    return truths


@bp.post("/models/<name>/feedback")
def feedback(name: str) -> Response:
    """``{"recorded", "unknown", "duplicate", "mismatched"}``: unknown ids were never answered
    (or are older than the predictions kept); a request is labelled once."""
    truths = _truths(request.get_json(silent=True))
    db = loopline().db
    with db.session() as s:
        if not registry.deployments(s, name, limit=1):
            raise NotFound(f"model {name[:64]!r} was never deployed")
    return jsonify(outcomes.feedback(db, name, truths).to_dict())
