"""``/serve/<model>/…``: the serving gateway in front of a model's releases.

Each request goes to the stable release or, while a canary is on trial, to the canary with
its ``traffic_percent`` chance. The routing table comes from the store and is cached per
process for :data:`ROUTE_TTL` seconds, so a rollback reaches every web worker within about a
second without a query per request. Connections to releases are kept alive per worker thread.
Telemetry is counted in memory and added to the store about once a second by a background
thread (:class:`Recorder`): no database write on the request path. Callers name themselves with
an ``X-Loopline-App`` header, counted per release so the dashboard shows who calls what.

The gateway is a WSGI layer in front of Flask (:func:`install`), not a view: what it adds to a
prediction is the point of it, and Flask's routing, request and response objects cost as much
as the exchange with the release. Its errors still go through Flask's error handlers
(:mod:`service.errors`), so they are the same JSON answers as everywhere else.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes, urlsplit

from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from service.errors import ApiError, NotFound
from service.outcomes import HEADER, Outcomes
from service.upstream import Answer, Connection
from store import releases, telemetry
from store.db import Database, StoreUnavailable

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

ROUTE_TTL = 1.0
FLUSH_SECONDS = 1.0
UPSTREAM_TIMEOUT = 20.0
METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
_MAX_CACHED_MODELS = 1000
#: Request headers (as WSGI environ keys, without ``HTTP_``) not passed on to the release.
_NOT_PASSED_ON = frozenset(
    (
        "CONNECTION",
        "KEEP_ALIVE",
        "PROXY_AUTHENTICATE",
        "PROXY_AUTHORIZATION",
        "TE",
        "TRAILER",
        "TRANSFER_ENCODING",
        "UPGRADE",
        "EXPECT",
        "HOST",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",  # from CONTENT_TYPE
    )
)
#: Answer headers (lowercase) not passed back: hop-by-hop ones, and those gunicorn writes itself.
_NOT_PASSED_BACK = frozenset(
    "connection keep-alive proxy-authenticate te trailer transfer-encoding upgrade "
    "content-length server date".split()
)
#: Bytes kept as they are in the path and query passed on; the rest is percent-encoded.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_QUERY_SAFE = "".join(map(chr, range(0x21, 0x7F)))


class BadGateway(ApiError):
    status, code = 502, "bad_gateway"


@dataclass(frozen=True)
class Target:
    """A route with its URL taken apart once, not per request."""

    route: releases.Route
    host: str
    port: int
    prefix: str  # the release URL's own path, if any
    tags: tuple[tuple[str, str], ...]  # the headers that say which release answered

    @classmethod
    def of(cls, route: releases.Route) -> Target:
        parts = urlsplit(route.url)
        tags = (("X-Loopline-Release", str(route.release)), ("X-Loopline-Model-Version", str(route.version)))
        return cls(route, parts.hostname or "", parts.port or 80, parts.path.rstrip("/"), tags)


class Recorder:
    """Per-process counters of every release, added to the store by a background thread."""

    def __init__(self, db: Database, interval: float = FLUSH_SECONDS) -> None:
        self.db = db
        self.interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._deltas: Counter[tuple[int, str, str]] = Counter()
        self._labels: dict[int, set[str]] = {}
        self._apps: dict[int, set[str]] = {}
        self._pid = 0  # the process whose flusher runs; a forked child starts its own
        #: Also called on every flush (the outcomes: request ids and input samples).
        self.hooks: list[Callable[[], None]] = []

    def record(self, release: int, status: int, seconds: float, labels: list[str], app: str = "") -> None:
        bucket = telemetry.BUCKET_KEYS[bisect_left(telemetry.BUCKETS, seconds)]
        with self._lock:
            d = self._deltas
            d[release, "requests", ""] += 1
            app = self._app(release, app)
            d[release, "app", app] += 1
            if status >= 500:
                d[release, "errors", ""] += 1
                d[release, "app_errors", app] += 1
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

    def _app(self, release: int, app: str) -> str:
        """The calling application's name as counted (at most MAX_APPS per release, then "other")."""
        app = app[:64] or telemetry.ANONYMOUS
        seen = self._apps.setdefault(release, set())
        if app not in seen:
            if len(seen) >= telemetry.MAX_APPS:
                return telemetry.OTHER
            seen.add(app)
        return app

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
        for hook in self.hooks:
            hook()

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

    def __init__(self, db: Database, max_body: int) -> None:
        self.db = db
        self.max_body = max_body
        self.timeout = UPSTREAM_TIMEOUT
        self.recorder = Recorder(db)
        self.outcomes = Outcomes(db)
        self.recorder.hooks.append(self.outcomes.flush)
        self._routes: dict[str, tuple[float, list[Target]]] = {}
        self._local = threading.local()
        self._pools: list[dict[tuple[str, int], Connection]] = []  # every thread's, to close them
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

    def serve(
        self, environ: WSGIEnvironment, model: str, rest: str
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Pass one request on to a release of ``model``: the status, headers and body to answer."""
        method = environ["REQUEST_METHOD"]
        if method not in METHODS:
            raise MethodNotAllowed(sorted(METHODS))
        target = self.choose(model[:64])
        path = target.prefix + "/" + quote_from_bytes(rest.encode("latin-1"), _PATH_SAFE)
        query = environ.get("QUERY_STRING")
        if query:
            path += "?" + quote_from_bytes(query.encode("latin-1"), _QUERY_SAFE)
        head = f"{method} {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        for key, value in environ.items():
            if key.startswith("HTTP_") and key[5:] not in _NOT_PASSED_ON:
                head += f"{key[5:].replace('_', '-').title()}: {value}\r\n"
        if environ.get("CONTENT_TYPE"):
            head += f"Content-Type: {environ['CONTENT_TYPE']}\r\n"
        body = b""
        if method not in ("GET", "HEAD"):
            body = self.read_body(environ)
            head += f"Content-Length: {len(body)}\r\n"
        route = target.route
        app = environ.get("HTTP_X_LOOPLINE_APP", "")
        started = time.perf_counter()
        try:
            answer = self.forward(target, (head + "\r\n").encode("latin-1") + body, head=method == "HEAD")
        except OSError as exc:
            self.recorder.record(route.release, 502, time.perf_counter() - started, [], app)
            reason = str(exc) or type(exc).__name__
            raise BadGateway(
                f"release #{route.release} of {model} (v{route.version}) did not answer: {reason}"
            ) from exc
        elapsed = time.perf_counter() - started
        labels = _labels(answer.body) if answer.status == 200 else []
        self.recorder.record(route.release, answer.status, elapsed, labels, app)
        headers = [(k, v) for k, v in answer.headers if k.lower() not in _NOT_PASSED_BACK]
        headers += target.tags
        if labels:  # a prediction: its id lets the client send the true label back
            headers.append((HEADER, self.outcomes.note(model[:64], route.release, labels, body)))
        if method != "HEAD":
            headers.append(("Content-Length", str(len(answer.body))))
        else:  # what a GET would answer, as the release said
            headers += [(k, v) for k, v in answer.headers if k.lower() == "content-length"]
        return f"{answer.status} {answer.reason}", headers, answer.body

    def read_body(self, environ: WSGIEnvironment) -> bytes:
        """The request body, refused (413) over the same limit as every other endpoint's."""
        stream = environ["wsgi.input"]
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            if not declared.isdigit():
                return b""  # as Werkzeug reads it
            if int(declared) > self.max_body:
                raise RequestEntityTooLarge()
            body: bytes = stream.read(int(declared))
        elif environ.get("wsgi.input_terminated"):  # chunked: no declared length
            body = stream.read(self.max_body + 1)
            if len(body) > self.max_body:
                raise RequestEntityTooLarge()
        else:
            body = b""
        return body

    def forward(self, target: Target, request: bytes, *, head: bool = False) -> Answer:
        """Send one request over this thread's kept-alive connection to the release (a fresh
        one once if a kept connection turns out closed); the answer is read in full."""
        pool: dict[tuple[str, int], Connection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
            self._pools.append(pool)
        key = (target.host, target.port)
        conn = pool.pop(key, None)
        if conn is not None:
            try:
                answer = conn.exchange(request, head=head)
            except ConnectionError:  # the release closed it (restarted, or an idle timeout)
                conn.close()
            except BaseException:
                conn.close()
                raise
            else:
                return self._keep(pool, key, conn, answer)
        conn = Connection(target.host, target.port, self.timeout)
        try:
            answer = conn.exchange(request, head=head)
        except BaseException:
            conn.close()
            raise
        return self._keep(pool, key, conn, answer)

    @staticmethod
    def _keep(
        pool: dict[tuple[str, int], Connection], key: tuple[str, int], conn: Connection, answer: Answer
    ) -> Answer:
        if answer.keep_alive:
            pool[key] = conn
        else:
            conn.close()
        return answer


def _close_pools(pools: list[dict[tuple[str, int], Connection]]) -> None:
    for pool in pools:
        for conn in pool.values():
            conn.close()
        pool.clear()


class Serve:
    """The WSGI layer: ``/serve/<model>/…`` goes to the gateway, everything else to Flask."""

    def __init__(self, app: Flask, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.next: WSGIApplication = app.wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith("/serve/"):
            return self.next(environ, start_response)
        model, slash, rest = path[7:].partition("/")
        if not model or not slash:
            return self.next(environ, start_response)  # Flask's JSON 404
        try:
            status, headers, body = self.gateway.serve(environ, model, rest)
        except Exception as exc:
            return self.error(environ, start_response, exc)
        start_response(status, headers)
        return [body]

    def error(
        self, environ: WSGIEnvironment, start_response: StartResponse, exc: Exception
    ) -> Iterable[bytes]:
        """Answer ``exc`` as Flask would have from a view: through :mod:`service.errors`."""
        with self.app.request_context(environ):
            response = self.app.make_response(self.app.handle_user_exception(exc))
        return response(environ, start_response)


def install(app: Flask) -> Gateway:
    """Put the gateway in front of ``app`` (``app.extensions["gateway"]``)."""
    gw = Gateway(app.extensions["loopline"].db, app.config["MAX_CONTENT_LENGTH"])
    app.extensions["gateway"] = gw
    app.wsgi_app = Serve(app, gw)  # type: ignore[method-assign]
    return gw
