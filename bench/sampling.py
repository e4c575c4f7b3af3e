#!/usr/bin/env python3
"""What remembering answers costs a gateway request: the request id kept for feedback and the
input sample kept for the drift check (``service/outcomes.py``).

On the request path the gateway calls ``Outcomes.note`` once per prediction: a uuid, a random
draw, a list append (and, sampled, a second append). This times that call alone, per call, at
sample rates 0, 0.1 and 1, with the same body a ``/serve/<model>/predict`` gets (one
breast-cancer instance); then the flush thread's cost per request (JSON parse of the sampled
bodies and the batch insert into SQLite), which is off the request path.

    python bench/sampling.py              # 200000 calls per rate
    python bench/sampling.py -n 50000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def per_call_ns(note: object, n: int, body: bytes) -> list[float]:
    """Nanoseconds per call, measured over batches of 100 calls (a timer per call would cost as
    much as the call): one figure per batch."""
    call = note  # a bound method
    figures = []
    labels = ["0"]
    for _ in range(n // 100):
        start = time.perf_counter_ns()
        for _ in range(100):
            call("bench", 1, labels, body)  # type: ignore[operator]
        figures.append((time.perf_counter_ns() - start) / 100)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="calls per sample rate (200000)")
    args = ap.parse_args()
    from sklearn.datasets import load_breast_cancer

    from service.outcomes import Outcomes
    from store.db import Database

    body = json.dumps({"instances": load_breast_cancer().data[:1].tolist()}).encode()
    with tempfile.TemporaryDirectory(prefix="loopline-bench-sampling-") as home:
        db = Database(f"sqlite:///{Path(home) / 'loopline.db'}")
        db.migrate()
        print(f"Outcomes.note per gateway request ({args.n} calls per rate, body {len(body)} bytes)")
        for rate in (0.0, 0.1, 1.0):
            outcomes = Outcomes(db)
            outcomes.rates = {"bench": rate}
            figures = per_call_ns(outcomes.note, args.n, body)
            p50, p99 = statistics.median(figures), statistics.quantiles(figures, n=100)[98]
            print(
                f"  sample_rate {rate:<4}  p50 {p50 / 1e6:.4f} ms  p99 {p99 / 1e6:.4f} ms  (per batch of 100)"
            )
            if rate:
                noted = len(outcomes._predicted)
                start = time.perf_counter()
                outcomes.flush()  # off the request path: the gateway's flush thread
                took = time.perf_counter() - start
                print(
                    f"      flush of {noted} requests: {took * 1e6 / noted:.1f} µs each (background thread)"
                )
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
