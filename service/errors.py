"""One exception hierarchy, one place mapping it to status codes and JSON bodies."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pipelines.config import ConfigError
from pipelines.events import Ignored, PayloadError
from store.db import StoreUnavailable
from store.releases import ReleaseError

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error=code, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(PayloadError)
    def _payload(exc: PayloadError) -> tuple[Response, int]:
        return error_response(400, "malformed_payload", str(exc))

    @app.errorhandler(Ignored)
    def _ignored(exc: Ignored) -> tuple[Response, int]:
        if exc.response is not None:
            return jsonify(exc.response), 200
        return jsonify(status="ignored", reason=exc.reason), 200

    @app.errorhandler(ConfigError)
    def _config(exc: ConfigError) -> tuple[Response, int]:
        return error_response(400, "bad_config", str(exc))

    @app.errorhandler(ReleaseError)
    def _release(exc: ReleaseError) -> tuple[Response, int]:
        return error_response(409, exc.code, str(exc))

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> tuple[Response, int]:
        log.error("store unavailable: %s", exc)
        return error_response(503, "store_unavailable", "the store cannot be written; retry later")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, "request_entity_too_large", f"the body is over the limit of {limit} bytes")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "unexpected error; see the server log")
