"""Loopline's built-in model server, for projects without an app of their own.

``python -m workers.model_server`` with ``PORT`` (and ``HOST``, default 127.0.0.1),
``LOOPLINE_MODEL_PATH`` and ``LOOPLINE_MODEL_SHA256``; refuses to unpickle an artifact whose sha256 differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 10 * 1024 * 1024


def load_verified(path: str, sha256: str) -> Any:
    data = open(path, "rb").read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SystemExit(f"refusing to load {path}: sha256 {actual} is not the registered {sha256}")
    return pickle.loads(data)  # noqa: S301  (verified against the registry's sha256 above)


def main() -> None:
    sha256 = os.environ.get("LOOPLINE_MODEL_SHA256", "")
    model = load_verified(os.environ["LOOPLINE_MODEL_PATH"], sha256)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses its connections
        disable_nagle_algorithm = True  # else the body waits for the ACK of the headers (40 ms)
        wbufsize = -1  # headers and body in one write (flushed after each request), one wake-up

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self._send(200, {"status": "ok", "model_sha256": sha256})
            else:
                self._send(404, {"error": "not_found", "message": self.path})

        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/predict":
                return self._send(404, {"error": "not_found", "message": self.path})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": "too_large", "message": "body over 10 MB"})
            try:
                instances = json.loads(self.rfile.read(length))["instances"]
                predictions = model.predict(instances).tolist()
            except Exception as exc:
                return self._send(400, {"error": "bad_request", "message": str(exc)[:300]})
            self._send(200, {"predictions": predictions, "model_sha256": sha256})

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(format % args + "\n")

    address = (os.environ.get("HOST") or "127.0.0.1", int(os.environ["PORT"]))
    ThreadingHTTPServer(address, Handler).serve_forever()


if __name__ == "__main__":
    main()
