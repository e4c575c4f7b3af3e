"""The baseline for bench/ack.py: a bare Flask endpoint that only checks the GitHub HMAC.

``POST /hooks/github`` reads the raw body, computes HMAC-SHA256 with the secret from
``BENCH_HOOK_SECRET``, compares it with ``X-Hub-Signature-256`` using ``hmac.compare_digest``
and answers 202 (401 if it does not match). No parsing, no storage: the floor any real
acknowledgement path is measured against. Serve it with ``gunicorn bare_app:app`` from bench/.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, Response, jsonify, request

app = Flask(__name__)
_SECRET = os.environ.get("BENCH_HOOK_SECRET", "topsecret").encode()


@app.post("/hooks/github")
def receive() -> tuple[Response, int]:
    body = request.get_data(cache=False)
    expected = "sha256=" + hmac.new(_SECRET, body, hashlib.sha256).hexdigest()
    given = request.headers.get("X-Hub-Signature-256", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return jsonify(error="bad_signature", message="missing or invalid signature"), 401
    return jsonify(status="accepted"), 202


@app.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200
