"""The HTTP edge: verify → parse → store the delivery → 202. Nothing slower on that path.

``service:create_app()`` is the WSGI factory (``gunicorn "service:create_app()"``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from config.settings import Settings
from store.db import Database


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` may pass ``settings``."""
    from service import actions, api, dashboard, errors, events, gateway, health, hooks, triggers
    from service.state import Loopline

    config = dict(test_config or {})
    settings: Settings = config.pop("settings", None) or Settings.from_env()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, **config)
    app.json = BoundedJSON(app)
    app.before_request(read_body_within_limit)
    db = Database(settings.database_url)
    db.migrate()
    app.extensions["loopline"] = Loopline(settings=settings, db=db)
    errors.register(app)
    for module in (hooks, events, api, actions, triggers, health, dashboard):
        app.register_blueprint(module.bp)
    gateway.install(app)
    log = logging.getLogger(__name__)
    for repo in settings.repositories:
        if repo.name not in settings.secrets:
            log.warning("repository %s has no secret_env: its webhooks are accepted unsigned", repo.name)
    log.info("loopline: %d repositories registered from %s", len(settings.repositories), settings.config_path)
    return app


class BoundedJSON(DefaultJSONProvider):
    """Flask's JSON, keeping the order records are written in; hostile nesting is a
    ``ValueError`` (so ``request.get_json`` answers 400), not a ``RecursionError`` (a 500)."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


def read_body_within_limit() -> None:
    """Read every request body before its view runs, refusing one over ``MAX_CONTENT_LENGTH``.

    A declared ``Content-Length`` over the limit is refused before a byte is read. A chunked
    body has no declared length, and Werkzeug's bounded stream silently stops at its limit, so
    the stream is bounded one byte above it: reading that byte means the body is over. Either
    way the answer is a JSON 413 for every endpoint, whether or not its view reads the body;
    views then get the body from the request's cache.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    request.max_content_length = limit + 1
    if len(request.get_data()) > limit:
        raise RequestEntityTooLarge()
