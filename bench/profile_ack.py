#!/usr/bin/env python3
"""Where the acknowledgement time goes, in-process (no gunicorn, no sockets, no load generator).

Calls the WSGI apps directly with prebuilt environs and reports CPU time per request for:
the bare HMAC endpoint (bench/bare_app.py), Loopline's ``POST /hooks/github``, and Loopline with
the store write replaced by a stub (so the difference is the cost of storing a delivery).
``--profile`` adds a cProfile listing of Loopline's path.

    python bench/profile_ack.py                  # SQLite in a temporary LOOPLINE_HOME
    python bench/profile_ack.py --postgres postgresql://postgres@127.0.0.1/test --profile
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from ack import (  # noqa: E402
    DEFAULT_PAYLOAD,
    SECRET,
    SECRET_ENV,
    cpu_by_pid,
    create_database,
    database_pids,
    drop_database,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000, help="measured requests per case (3000)")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="use a fresh database (created and dropped) on this PostgreSQL server",
    )
    ap.add_argument("--profile", action="store_true", help="print a cProfile listing of Loopline's path")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="callers at once, as in a gthread worker (1); concurrent acknowledgements share commits",
    )
    args = ap.parse_args()

    body = DEFAULT_PAYLOAD.read_bytes()
    full_name = json.loads(body)["repository"]["full_name"]
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    tmp = Path(tempfile.mkdtemp(prefix="loopline-profile-"))
    pg: tuple[str, str] | None = None
    try:
        config = tmp / "loopline.yaml"
        config.write_text(
            json.dumps(
                {
                    "repositories": [
                        {
                            "name": "bench",
                            "provider": "github",
                            "match": full_name,
                            "branches": ["master"],
                            "url": f"https://github.com/{full_name}.git",
                            "secret_env": SECRET_ENV,
                        }
                    ]
                }
            )
        )
        os.environ.update(
            {"LOOPLINE_HOME": str(tmp / "home"), "LOOPLINE_CONFIG": str(config), SECRET_ENV: SECRET}
        )
        os.environ.pop("LOOPLINE_DATABASE_URL", None)
        if args.postgres:
            url = create_database(args.postgres)
            pg = (args.postgres, url.rsplit("/", 1)[1])
            os.environ["LOOPLINE_DATABASE_URL"] = url

        import bare_app
        from werkzeug.test import EnvironBuilder

        from service import create_app, hooks
        from store.deliveries import Recorded

        app = create_app()

        def environs(n: int) -> list[dict[str, Any]]:
            def headers() -> list[tuple[str, str]]:
                return [
                    ("Content-Type", "application/json"),
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", signature),
                    ("X-GitHub-Delivery", f"profile-{uuid.uuid4().hex}"),
                ]

            return [
                EnvironBuilder(
                    path="/hooks/github", method="POST", data=body, headers=headers()
                ).get_environ()
                for _ in range(n)
            ]

        status: list[str] = []

        def start_response(s: str, _headers: Any, _exc: Any = None) -> None:
            status.append(s)

        def call_all(wsgi: WSGIApp, batch: list[dict[str, Any]]) -> None:
            def some(part: list[dict[str, Any]]) -> None:
                for environ in part:
                    b"".join(wsgi(environ, start_response))

            if args.threads == 1:  # on this thread: what --profile sees
                return some(batch)
            parts = [batch[i :: args.threads] for i in range(args.threads)]
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(some, parts))

        store_ms: list[float] = []
        walls: list[float] = []

        def cpu_per_request(wsgi: WSGIApp, profiler: cProfile.Profile | None = None) -> float:
            call_all(wsgi, environs(300))  # warm-up, and the store's connections opened
            batch = environs(args.n)
            status.clear()
            pids = database_pids(os.environ["LOOPLINE_DATABASE_URL"]) if args.postgres else []
            db0 = cpu_by_pid(pids)
            if profiler:
                profiler.enable()
            t0, w0 = time.process_time(), time.perf_counter()
            call_all(wsgi, batch)
            spent = time.process_time() - t0
            walls.append(time.perf_counter() - w0)
            if profiler:
                profiler.disable()
            db1 = cpu_by_pid(pids)
            ticks = sum(db1[pid] - db0[pid] for pid in db1.keys() & db0.keys())
            store_ms.append(ticks / os.sysconf("SC_CLK_TCK") / args.n * 1000)
            bad = [s for s in status if not s.startswith("202")]
            if bad:
                raise SystemExit(f"unexpected answers: {bad[:3]}")
            return spent / args.n * 1000

        store = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"CPU per request, in-process, {args.n} requests each "
            f"from {args.threads} thread(s), store {store}:"
        )
        print(f"  bare HMAC endpoint                      {cpu_per_request(bare_app.app.wsgi_app):.3f} ms")
        print(f"  loopline POST /hooks/github             {cpu_per_request(app.wsgi_app):.3f} ms")
        print(f"    answered per second                   {args.n / walls[-1]:.0f}")
        if args.postgres:
            print(f"    and PostgreSQL's CPU for it           {store_ms[-1]:.3f} ms")
        real = hooks.record_delivery
        hooks.record_delivery = lambda db, **kw: Recorded(uuid.uuid4().hex, "accepted")  # type: ignore[assignment]
        try:
            print(f"  loopline, store write stubbed out       {cpu_per_request(app.wsgi_app):.3f} ms")
        finally:
            hooks.record_delivery = real
        if args.profile:
            profiler = cProfile.Profile()
            cpu_per_request(app.wsgi_app, profiler)
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(35)
            stats.sort_stats("tottime").print_stats(20)
            print(out.getvalue())
        app.extensions["loopline"].db.dispose()
    finally:
        if pg:
            drop_database(*pg)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
