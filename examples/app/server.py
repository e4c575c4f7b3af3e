"""HTTP server for the trained model: `python -m app.server` (from the project root).

Environment:
  PORT                   port to listen on, default 8000
  HOST                   address to listen on, default 127.0.0.1 (Loopline sets 0.0.0.0 for
                         releases other hosts reach)
  LOOPLINE_MODEL_PATH    pickled model, default models/model.pkl
  LOOPLINE_MODEL_SHA256  required; the server refuses to start (exit 2) unless the
                         file's sha256 matches, so only verified artifacts are unpickled.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from app.features import FeatureError, parse_instances


class ArtifactError(Exception):
    """The model file is missing or is not the expected artifact."""


def load_verified(path: Path, expected_sha256: str) -> tuple[Any, str]:
    """Read `path` once, check its sha256, and only then unpickle those same bytes."""
    if not expected_sha256:
        raise ArtifactError("LOOPLINE_MODEL_SHA256 is not set; refusing to load an unverified model")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read model file {path}: {exc}") from exc
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise ArtifactError(f"sha256 mismatch for {path}: expected {expected_sha256}, got {actual}")
    return pickle.loads(blob), actual


def create_app(model: Any, model_sha256: str) -> Flask:
    """Build the Flask app around an already-verified model."""
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", model_sha256=model_sha256)

    @app.post("/predict")
    def predict() -> Any:
        payload = request.get_json(silent=True)
        try:
            rows = parse_instances(payload)
        except FeatureError as exc:
            return jsonify(error=str(exc)), 400
        predictions = [int(p) for p in model.predict(rows)]
        return jsonify(predictions=predictions, model_sha256=model_sha256)

    return app


def main() -> None:
    path = Path(os.environ.get("LOOPLINE_MODEL_PATH", "models/model.pkl"))
    try:
        model, sha = load_verified(path, os.environ.get("LOOPLINE_MODEL_SHA256", ""))
    except ArtifactError as exc:
        print(f"app.server: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    port = int(os.environ.get("PORT", "8000"))
    host = os.environ.get("HOST") or "127.0.0.1"
    print(f"app.server: serving {path} (sha256 {sha[:12]}) on http://{host}:{port}", flush=True)
    create_app(model, sha).run(host=host, port=port, threaded=True)


if __name__ == "__main__":
    main()
