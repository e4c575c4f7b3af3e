#!/usr/bin/env python3
"""Where the gateway's time goes, in-process (no gunicorn, no client socket).

Starts one release of a real model (as ``bench/gateway.py`` does), builds Loopline's WSGI app,
and reports CPU time per request of this process for: the release called directly with
``http.client`` (what a plain client spends), ``/serve/bench/predict`` through the app (the
gateway's own cost; the release's CPU is another process's), and ``/serve/none/predict``
(``404 no_release``: the error path). ``--profile`` adds a cProfile listing of the gateway path.

    python bench/profile_gateway.py
    python bench/profile_gateway.py -n 5000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from ack import HOST  # noqa: E402
from gateway import register_release  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000, help="measured requests per case (3000)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile listing of the gateway path")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="loopline-profile-gateway-"))
    try:
        database_url = f"sqlite:///{home / 'loopline.db'}"
        (home / "loopline.yaml").write_text("repositories: []\n")
        release_url, _, _ = register_release(home, database_url, "builtin")  # stopped at exit
        os.environ.update(
            LOOPLINE_HOME=str(home),
            LOOPLINE_DATABASE_URL=database_url,
            LOOPLINE_CONFIG=str(home / "loopline.yaml"),
        )
        from sklearn.datasets import load_breast_cancer

        from service import create_app

        app = create_app()
        body = json.dumps({"instances": load_breast_cancer().data[:1].tolist()}).encode()
        status: list[str] = []

        def start_response(s: str, _headers: Any, _exc: Any = None) -> None:
            status.append(s)

        def through_app(path: str) -> Callable[[], None]:
            def once() -> None:
                environ = {
                    "REQUEST_METHOD": "POST",
                    "PATH_INFO": path,
                    "QUERY_STRING": "",
                    "SERVER_NAME": HOST,
                    "SERVER_PORT": "8080",
                    "SERVER_PROTOCOL": "HTTP/1.1",
                    "REMOTE_ADDR": HOST,
                    "CONTENT_TYPE": "application/json",
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_HOST": f"{HOST}:8080",
                    "HTTP_USER_AGENT": "bench",
                    "wsgi.url_scheme": "http",
                    "wsgi.input": io.BytesIO(body),
                    "wsgi.errors": sys.stderr,
                    "wsgi.version": (1, 0),
                    "wsgi.multithread": True,
                    "wsgi.multiprocess": True,
                    "wsgi.run_once": False,
                }
                b"".join(app(environ, start_response))

            return once

        conn = http.client.HTTPConnection(HOST, int(release_url.rsplit(":", 1)[1]))

        def direct() -> None:
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            status.append(f"{answer.status}")

        def cpu_per_request(
            once: Callable[[], None], expect: str, profiler: cProfile.Profile | None = None
        ) -> float:
            for _ in range(300):  # warm-up
                once()
            status.clear()
            if profiler:
                profiler.enable()
            t0 = time.process_time()
            for _ in range(args.n):
                once()
            spent = time.process_time() - t0
            if profiler:
                profiler.disable()
            bad = [s for s in status if not s.startswith(expect)]
            if bad:
                raise SystemExit(f"unexpected answers: {bad[:3]}")
            return spent / args.n * 1000

        print(f"CPU per request of this process, in-process, {args.n} requests each:")
        print(f"  the release directly (http.client)      {cpu_per_request(direct, '200'):.3f} ms")
        gateway = through_app("/serve/bench/predict")
        print(f"  POST /serve/bench/predict (gateway)     {cpu_per_request(gateway, '200'):.3f} ms")
        missing = through_app("/serve/none/predict")
        print(f"  POST /serve/none/predict (404)          {cpu_per_request(missing, '404'):.3f} ms")
        if args.profile:
            profiler = cProfile.Profile()
            cpu_per_request(gateway, "200", profiler)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
        conn.close()
        app.extensions["gateway"].close()
        app.extensions["loopline"].db.dispose()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
