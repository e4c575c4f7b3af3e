#!/usr/bin/env python3
"""The serving gateway's added latency: ``/serve/<model>/predict`` vs the release directly.

One invocation registers a real scikit-learn model (breast-cancer logistic regression) in a
temporary ``LOOPLINE_HOME`` (SQLite, or a throw-away PostgreSQL database with ``--postgres``),
starts ONE release of it (Loopline's built-in model server, or the sample app with
``--release example``), records it as the model's active deployment with 100% of the traffic,
and starts Loopline under gunicorn (``"service:create_app()"``, threaded workers as ``loopline
serve`` runs them, or ``-k sync``). Then a single client sends the same payload alternately to
the release directly and through the gateway, each over its own kept-alive connection, and
prints the latency percentiles of both and of the per-pair difference: what the gateway adds.

    python bench/gateway.py                   # 2000 pairs after 300 warm-up pairs
    python bench/gateway.py --requests 5000 --workers 4
    python bench/gateway.py --release example --postgres postgresql://postgres@127.0.0.1/postgres

Servers and temporary files are removed on exit.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import http.client
import json
import os
import pickle
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from ack import CLEANUP, HOST, create_database, server_cpu_seconds, start_gunicorn  # noqa: E402


def register_release(home: Path, database_url: str, release: str) -> tuple[str, int, int]:
    """Train, register and start one release of model ``bench``; returns its URL, deployment id and pid."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from store.db import Database
    from store.models import Deployment, ModelVersion, Run
    from workers import serving

    X, y = load_breast_cancer(return_X_y=True)
    artifact = home / "artifacts" / "bench" / "1" / "model.pkl"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(
        pickle.dumps(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y))
    )
    sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
    example = release == "example"
    server = serving.start(
        cwd=ROOT / "examples" if example else ROOT,
        command="python -m app.server" if example else None,
        model_path=artifact,
        sha256=sha256,
        log_file=home / "release.log",
    )
    atexit.register(serving.stop, server.pid)
    db = Database(database_url)
    db.migrate()
    with db.session() as s:
        run = Run(repository="bench", trigger="push", status="succeeded", dedupe_key="bench", model_version=1)
        s.add(run)
        s.flush()
        s.add(
            ModelVersion(
                name="bench",
                version=1,
                run_id=run.id,
                repository="bench",
                commit="0" * 40,
                data_version={},
                params={},
                metrics={},
                artifact_path=str(artifact),
                sha256=sha256,
            )
        )
        dep = Deployment(
            model_name="bench",
            version=1,
            run_id=run.id,
            target="local",
            url=server.url,
            pid=server.pid,
            status="active",
            traffic_percent=100,
        )
        s.add(dep)
    db.dispose()
    return server.url, dep.id, server.pid


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", "-n", type=int, default=2000, help="measured pairs (2000)")
    ap.add_argument("--warmup", type=int, default=300, help="unmeasured pairs first (300)")
    ap.add_argument("--workers", "-w", type=int, default=2, help="gunicorn workers (2)")
    ap.add_argument("--worker-class", "-k", choices=("sync", "gthread"), default="gthread")
    ap.add_argument("--threads", type=int, default=4, help="threads per gthread worker (4)")
    ap.add_argument("--rows", type=int, default=1, help="rows per prediction request (1)")
    ap.add_argument("--release", choices=("builtin", "example"), default="builtin")
    ap.add_argument("--postgres", metavar="ADMIN_URL", help="store in a fresh PostgreSQL database")
    args = ap.parse_args()
    atexit.register(CLEANUP.run)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))

    home = Path(tempfile.mkdtemp(prefix="loopline-bench-gateway-"))
    CLEANUP.dirs.append(home)
    database_url = create_database(args.postgres) if args.postgres else f"sqlite:///{home / 'loopline.db'}"
    (home / "loopline.yaml").write_text("repositories: []\n")
    release_url, release_id, release_pid = register_release(home, database_url, args.release)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_DATABASE_URL=database_url,
        LOOPLINE_CONFIG=str(home / "loopline.yaml"),
    )
    proc, port = start_gunicorn(
        "loopline",
        "service:create_app()",
        cwd=ROOT,
        env=env,
        args=args,
        logdir=home,
        health="/healthz",
        extra=[],
    )

    from sklearn.datasets import load_breast_cancer

    body = json.dumps({"instances": load_breast_cancer().data[: args.rows].tolist()}).encode()
    headers = {"Content-Type": "application/json"}
    release_port = int(release_url.rsplit(":", 1)[1])
    targets = {
        "direct": (release_port, "/predict"),
        "gateway": (port, "/serve/bench/predict"),
    }
    conns = {name: http.client.HTTPConnection(HOST, p, timeout=10) for name, (p, _) in targets.items()}
    reconnects = {name: 0 for name in targets}

    def once(name: str) -> tuple[float, bytes]:
        path = targets[name][1]
        started = time.perf_counter()
        conn = conns[name]
        conn.request("POST", path, body, headers)
        answer = conn.getresponse()
        data = answer.read()
        elapsed = time.perf_counter() - started
        if answer.status != 200:
            raise SystemExit(f"{name}: {answer.status} {data[:300]!r}")
        if answer.will_close:  # the sample app's dev server closes every connection
            conn.close()
            reconnects[name] += 1
        return elapsed, data

    direct_body, gateway_body = once("direct")[1], once("gateway")[1]
    if json.loads(direct_body) != json.loads(gateway_body):
        raise SystemExit(f"the gateway answered {gateway_body[:200]!r}, the release {direct_body[:200]!r}")
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    cpu: dict[str, float | None] = {}
    for i in range(args.warmup + args.requests):
        if i == args.warmup:
            cpu = {"gateway": server_cpu_seconds(proc.pid), "release": server_cpu_seconds(release_pid)}
        order = ("direct", "gateway") if i % 2 else ("gateway", "direct")  # interleaved, alternating
        pair = {name: once(name)[0] for name in order}
        if i >= args.warmup:
            for name, t in pair.items():
                times[name].append(t)
    gateway_cpu, release_cpu = server_cpu_seconds(proc.pid), server_cpu_seconds(release_pid)

    sent_through_gateway = args.warmup + args.requests + 1
    counted = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # every worker flushes its counters about once a second
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", "/api/models/bench/telemetry")
        numbers = json.loads(conn.getresponse().read())
        conn.close()
        counted = next(r for r in numbers["releases"] if r["id"] == release_id)["telemetry"]["requests"]
        if counted >= sent_through_gateway:
            break
        time.sleep(0.3)

    diffs = [g - d for g, d in zip(times["gateway"], times["direct"], strict=True)]
    ms = 1000.0
    print(
        f"gateway bench: {args.requests} interleaved pairs after {args.warmup} warm-up, {args.rows} row(s), "
        f"release={args.release}, gunicorn -w {args.workers} -k {args.worker_class}, "
        f"store={'postgresql' if args.postgres else 'sqlite'}"
    )
    print(f"{'':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for name, values in (("release directly", times["direct"]), ("through the gateway", times["gateway"])):
        print(
            f"{name:<22}{percentile(values, 0.5) * ms:>9.3f}{percentile(values, 0.9) * ms:>9.3f}"
            f"{percentile(values, 0.99) * ms:>9.3f}{statistics.fmean(values) * ms:>9.3f}"
        )
    print(
        f"{'added (per pair)':<22}{percentile(diffs, 0.5) * ms:>9.3f}{percentile(diffs, 0.9) * ms:>9.3f}"
        f"{percentile(diffs, 0.99) * ms:>9.3f}{statistics.fmean(diffs) * ms:>9.3f}"
    )
    added_p50 = (percentile(times["gateway"], 0.5) - percentile(times["direct"], 0.5)) * ms
    print(f"added at p50 (p50 gateway - p50 direct): {added_p50:.3f} ms   (aim: < 1 ms)")
    if None not in (gateway_cpu, release_cpu, *cpu.values()):
        per_gateway = (gateway_cpu - cpu["gateway"]) / args.requests * ms  # type: ignore[operator]
        per_release = (release_cpu - cpu["release"]) / (2 * args.requests) * ms  # type: ignore[operator]
        print(
            f"server CPU per request: gateway (gunicorn) {per_gateway:.3f} ms, release {per_release:.3f} ms"
        )
    print(
        f"reconnects: {reconnects}   telemetry counted {counted} of {sent_through_gateway} gateway requests"
    )
    return 0 if counted == sent_through_gateway else 1


if __name__ == "__main__":
    sys.exit(main())
