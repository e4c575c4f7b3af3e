"""Helpers every dialect shares: strict JSON, headers, HMAC on the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pipelines.events import PayloadError


def load_json(body: bytes) -> dict[str, Any]:
    """Decode a JSON object strictly: UTF-8, bounded nesting, an object at the top."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not UTF-8") from exc
    try:
        data = json.loads(text)
    except RecursionError as exc:  # hostile nesting: answer 400, fast, not a crash
        raise PayloadError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object")
    return data


def header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def require_header(headers: Mapping[str, str], name: str) -> str:
    value = header(headers, name)
    if value is None:
        raise PayloadError(f"missing header {name}")
    return value


def hmac_sha256_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_matches(signature: str | None, secret: bytes, body: bytes, prefix: str = "sha256=") -> bool:
    """True if ``signature`` is ``prefix`` + the hex HMAC-SHA256 of ``body`` (constant time)."""
    if not signature or not signature.startswith(prefix):
        return False
    expected = prefix + hmac_sha256_hex(secret, body)
    return hmac.compare_digest(signature.strip().encode(), expected.encode())
