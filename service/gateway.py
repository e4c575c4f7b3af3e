"""``/serve/<model>/…``: the serving gateway in front of a model's releases.

Each request goes to the stable release or, while a canary is on trial, to the canary with
its ``traffic_percent`` chance. The routing table comes from the store and is cached per
process for :data:`ROUTE_TTL` seconds, so a rollback reaches every web worker within about a
second without a query per request. Connections to releases are kept alive per worker thread.
Telemetry is counted in memory and added to the store about once a second by a background
thread (:class:`Recorder`): no database write on the request path.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from service.errors import ApiError, NotFound
from store import releases, telemetry
from store.db import Database, StoreUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("gateway", __name__, url_prefix="/serve")

ROUTE_TTL = 1.0
FLUSH_SECONDS = 1.0
UPSTREAM_TIMEOUT = 20.0
_MAX_CACHED_MODELS = 1000
_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
_NOT_PASSED_BACK = _HOP_BY_HOP | {"server", "date"}  # gunicorn writes its own


class BadGateway(ApiError):
    status, code = 502, "bad_gateway"


@dataclass(frozen=True)
class Target:
    """A route with its URL taken apart once, not per request."""

    route: releases.Route
    host: str
    port: int
    prefix: str  # the release URL's own path, if any

    @classmethod
    def of(cls, route: releases.Route) -> Target:
        parts = urlsplit(route.url)
        return cls(route, parts.hostname or "", parts.port or 80, parts.path.rstrip("/"))


class Recorder:
    """Per-process counters of every release, added to the store by a background thread."""

    def __init__(self, db: Database, interval: float = FLUSH_SECONDS) -> None:
        self.db = db
        self.interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._deltas: Counter[tuple[int, str, str]] = Counter()
        self._labels: dict[int, set[str]] = {}
        self._pid = 0  # the process whose flusher runs; a forked child starts its own

    def record(self, release: int, status: int, seconds: float, body: bytes | None) -> None:
        labels = _labels(body) if body is not None and status == 200 else []
        bucket = telemetry.BUCKET_KEYS[bisect_left(telemetry.BUCKETS, seconds)]
        with self._lock:
            d = self._deltas
            d[release, "requests", ""] += 1
            if status >= 500:
                d[release, "errors", ""] += 1
            d[release, "latency", bucket] += 1
            d[release, "latency_sum_us", ""] += int(seconds * 1e6)
            if labels:
                seen = self._labels.setdefault(release, set())
                for label in labels:
                    if label not in seen:
                        if len(seen) >= telemetry.MAX_LABELS:
                            label = telemetry.OTHER
                        seen.add(label)
                    d[release, "predictions", label] += 1
        if self._pid != os.getpid():
            self._start()

    def flush(self) -> None:
        """Add what was counted since the last flush to the store; on failure keep it for the next."""
        with self._lock:
            deltas, self._deltas = self._deltas, Counter()
        try:
            telemetry.add(self.db, deltas)
        except Exception:
            log.exception("gateway telemetry: flush failed; retrying in %.0fs", self.interval)
            with self._lock:
                self._deltas.update(deltas)

    def stop(self) -> None:
        """Flush once more and end the flusher."""
        self._stopped.set()
        atexit.unregister(self.flush)
        self.flush()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid() or self._stopped.is_set():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._run, name="gateway-telemetry", daemon=True).start()
        atexit.register(self.flush)  # what the last second counted, when the worker exits

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.flush()


def _labels(body: bytes) -> list[str]:
    """Predicted labels in a JSON answer (``predictions``: [...] or ``prediction``: x)."""
    if b'"prediction' not in body:
        return []
    try:
        payload = json.loads(body)
    except ValueError:
        return []
    if not isinstance(payload, dict):
        return []
    values = payload.get("predictions", payload.get("prediction"))
    values = values if isinstance(values, list) else [values]
    return [
        str(v)[:64] if isinstance(v, str | int | float) else telemetry.OTHER for v in values if v is not None
    ]


class Gateway:
    """One app's routing cache, keep-alive connections and recorder."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.recorder = Recorder(db)
        self._routes: dict[str, tuple[float, list[Target]]] = {}
        self._local = threading.local()
        self._pools: list[
            dict[tuple[str, int], http.client.HTTPConnection]
        ] = []  # every thread's, to close them
        weakref.finalize(self, _close_pools, self._pools)

    def close(self) -> None:
        """Flush the telemetry and close every kept-alive connection."""
        self.recorder.stop()
        _close_pools(self._pools)

    def routes(self, model: str) -> list[Target]:
        now = time.monotonic()
        cached = self._routes.get(model)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            with self.db.session() as s:
                found = [Target.of(r) for r in releases.routes(s, model)]
        except StoreUnavailable:
            if cached is None:
                raise
            return cached[1]  # a store hiccup: keep serving with the last table
        if len(self._routes) >= _MAX_CACHED_MODELS:
            self._routes.clear()
        self._routes[model] = (now + ROUTE_TTL, found)
        return found

    def choose(self, model: str) -> Target:
        targets = self.routes(model)
        if not targets:
            raise NotFound(f"model {model!r} has no release serving", "no_release")
        if len(targets) == 1:
            return targets[0]
        pick = random.random() * sum(t.route.percent for t in targets)
        for target in targets:
            pick -= target.route.percent
            if pick < 0:
                return target
        return targets[-1]

    def forward(
        self, target: Target, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        """Send one request over this thread's kept-alive connection to the release (a fresh
        one once if a kept connection turns out closed); the response is read in full."""
        pool: dict[tuple[str, int], http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
            self._pools.append(pool)
        key = (target.host, target.port)
        for attempt in (1, 2):
            conn = pool.pop(key, None)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(target.host, target.port, timeout=UPSTREAM_TIMEOUT)
            try:
                if not reused:
                    conn.connect()
                    # http.client sends the headers and the body in two writes: without this the
                    # body waits for the release to acknowledge the headers (up to 40 ms).
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.request(method, path, body, headers)
                response = conn.getresponse()
                response.body = response.read()  # type: ignore[attr-defined]
            except (OSError, http.client.HTTPException):
                conn.close()
                if reused and attempt == 1:
                    continue
                raise
            if not response.will_close:
                pool[key] = conn
            else:
                conn.close()
            return response
        raise AssertionError("unreachable")


def _close_pools(pools: list[dict[tuple[str, int], http.client.HTTPConnection]]) -> None:
    for pool in pools:
        for conn in pool.values():
            conn.close()
        pool.clear()


@bp.record
def _attach(state: BlueprintSetupState) -> None:
    state.app.extensions["gateway"] = Gateway(state.app.extensions["loopline"].db)


def gateway() -> Gateway:
    found: Gateway = current_app.extensions["gateway"]
    return found


@bp.route(
    "/<model>/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
)
@bp.route("/<model>/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def serve(model: str, rest: str) -> Response:
    gw = gateway()
    target = gw.choose(model[:64])
    route = target.route
    path = target.prefix + "/" + rest
    if request.query_string:
        path += "?" + request.query_string.decode("latin-1")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    body = request.get_data() if request.method not in ("GET", "HEAD") else None
    started = time.perf_counter()
    try:
        answer = gw.forward(target, request.method, path, body, headers)
    except (OSError, http.client.HTTPException) as exc:
        gw.recorder.record(route.release, 502, time.perf_counter() - started, None)
        raise BadGateway(
            f"release #{route.release} of {model} (v{route.version}) did not answer: {exc}"
        ) from exc
    data: bytes = answer.body  # type: ignore[attr-defined]
    gw.recorder.record(route.release, answer.status, time.perf_counter() - started, data)
    headers = {k: v for k, v in answer.getheaders() if k.lower() not in _NOT_PASSED_BACK}
    headers["X-Loopline-Release"] = str(route.release)
    headers["X-Loopline-Model-Version"] = str(route.version)
    return Response(data, status=answer.status, headers=headers)
