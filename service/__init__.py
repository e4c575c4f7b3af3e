"""The HTTP edge: verify → parse → store the delivery → 202. Nothing slower on that path.

``service:create_app()`` is the WSGI factory (``gunicorn "service:create_app()"``);
``service:create_gateway()`` serves only the model gateway, for a process of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter, Map

from config.settings import Settings
from store.db import Database

#: The largest id the store holds (PostgreSQL's INTEGER; SQLite's is wider).
STORE_ID_MAX = 2**31 - 1


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` may pass ``settings``."""
    from service import (
        actions,
        api,
        dashboard,
        datasets,
        events,
        feedback,
        health,
        hooks,
        reproductions,
        triggers,
    )

    app, settings = _base(test_config)
    for module in (
        hooks,
        events,
        api,
        actions,
        triggers,
        reproductions,
        feedback,
        datasets,
        health,
        dashboard,
    ):
        app.register_blueprint(module.bp)
    log = logging.getLogger(__name__)
    for repo in settings.repositories:
        if repo.name not in settings.secrets:
            log.warning("repository %s has no secret_env: its webhooks are accepted unsigned", repo.name)
    log.info("loopline: %d repositories registered from %s", len(settings.repositories), settings.config_path)
    return app


def create_gateway(test_config: dict[str, Any] | None = None) -> Flask:
    """Only ``/serve/<model>/…`` and ``/healthz`` (Procfile ``gateway``): prediction traffic in
    processes of its own, so it never queues behind webhook acknowledgements."""
    from service import feedback, health

    app, _settings = _base(test_config)
    for module in (health, feedback):  # the true labels of its answers come back here too
        app.register_blueprint(module.bp)
    return app


def _base(test_config: dict[str, Any] | None) -> tuple[Flask, Settings]:
    """The store, error handlers, body limit and the gateway: what both processes share."""
    from service import errors, gateway
    from service.state import Loopline

    config = dict(test_config or {})
    settings: Settings = config.pop("settings", None) or Settings.from_env()
    app = Flask(__name__)
    app.url_map.converters["int"] = StoreId  # before any route: every <int:…> in a URL is bounded
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, **config)
    app.json = BoundedJSON(app)
    app.before_request(read_body_within_limit)
    db = Database(settings.database_url)
    db.migrate()
    app.extensions["loopline"] = Loopline(settings=settings, db=db)
    errors.register(app)
    gateway.install(app)
    return app, settings


class StoreId(IntegerConverter):
    """``<int:…>`` for ids the store can hold (PostgreSQL's INTEGER): a bigger one matches no
    route, so it is a 404 rather than an overflow in the database (a 500)."""

    def __init__(
        self,
        url_map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = STORE_ID_MAX,
        signed: bool = False,
    ) -> None:
        super().__init__(url_map, fixed_digits, min, max, signed)


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
