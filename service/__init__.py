"""The HTTP edge: verify → parse → store the delivery → 202. Nothing slower on that path.

``service:create_app()`` is the WSGI factory (``gunicorn "service:create_app()"``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from loopline.settings import Settings
from store.db import Database


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` may pass ``settings``."""
    from service import actions, api, dashboard, errors, gateway, health, hooks
    from service.state import Loopline

    config = dict(test_config or {})
    settings: Settings = config.pop("settings", None) or Settings.from_env()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, **config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the order records are written in
    db = Database(settings.database_url)
    db.migrate()
    app.extensions["loopline"] = Loopline(settings=settings, db=db)
    errors.register(app)
    for module in (hooks, api, actions, health, dashboard, gateway):
        app.register_blueprint(module.bp)
    log = logging.getLogger(__name__)
    for repo in settings.repositories:
        if repo.name not in settings.secrets:
            log.warning("repository %s has no secret_env: its webhooks are accepted unsigned", repo.name)
    log.info("loopline: %d repositories registered from %s", len(settings.repositories), settings.config_path)
    return app
