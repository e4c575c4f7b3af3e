"""Pipeline latency benchmark: push-to-first-stage latency and orchestration overhead.

Starts Loopline like ``loopline up`` (embedded Redis unless LOOPLINE_BROKER_URL is set, SQLite),
pushes the sample project through a real post-receive hook, then N app-code pushes, then drops
a storm of data files. For each run it prints:

- ack→first stage: from the delivery's acknowledgement to the first stage starting (relay,
  intake with git fetch/diff/classify/plan/worktree, broker hops);
- overhead: the run's wall time minus the sum of its stages' own time, and as a share of the run.

Usage: python bench/pipeline.py [--app-pushes 5] [--storm 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopline.demo import EXAMPLE, prepare_project, write_config  # noqa: E402
from loopline.hook import install_hook  # noqa: E402
from loopline.processes import Stack  # noqa: E402
from workers.serving import free_port  # noqa: E402

TERMINAL = {"succeeded", "failed", "skipped", "cancelled", "gate_failed"}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wait_run(url: str, after_id: int, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in requests.get(f"{url}/api/runs", timeout=5).json()["runs"] if r["id"] > after_id]
        if runs and all(r["status"] in TERMINAL for r in runs):
            return requests.get(f"{url}/api/runs/{max(r['id'] for r in runs)}", timeout=5).json()
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for a run after #{after_id}")


def measure(run: dict[str, Any]) -> dict[str, float]:
    stages = [s for s in run["stages"] if s["started_at"]]
    first = min(ts(s["started_at"]) for s in stages)
    last = max(ts(s["finished_at"]) for s in stages)
    received = min(ts(d["received_at"]) for d in run["deliveries"])
    own = sum(s["duration_seconds"] or 0 for s in stages)
    wall = (last - received).total_seconds()
    return {
        "to_first_stage": (first - received).total_seconds(),
        "wall": wall,
        "own": own,
        "overhead": wall - own,
        "share": (wall - own) / wall if wall else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app-pushes", type=int, default=5)
    parser.add_argument("--storm", type=int, default=200, help="data files dropped at once (0: none)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loopline-bench-"))
    work, remote, lake = root / "churn", root / "remote.git", root / "lake"
    lake.mkdir()
    config = write_config(root / "loopline.yaml", remote, lake)
    env = {**os.environ, "LOOPLINE_HOME": str(root / "home"), "LOOPLINE_CONFIG": str(config)}
    env.pop("LOOPLINE_DATABASE_URL", None)
    stack = Stack(env, free_port())
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        prepare_project(EXAMPLE, work, remote)
        stack.start()
        install_hook(remote, f"{stack.url}/hooks/git", "churn")
        subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, check=True, capture_output=True)
        run = wait_run(stack.url, 0)
        rows.append((f"#{run['id']} first push ({len(run['stages'])} stages)", measure(run)))
        for i in range(args.app_pushes):
            (work / "app" / "version.py").write_text(f"VERSION = {i}\n")
            subprocess.run(["git", "add", "-A"], cwd=work, check=True)
            subprocess.run(["git", "commit", "-qm", f"app change {i}"], cwd=work, check=True)
            subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, check=True, capture_output=True)
            run = wait_run(stack.url, run["id"])
            rows.append((f"#{run['id']} app push ({len(run['stages'])} stages)", measure(run)))
        if args.storm:
            sample = root / "sample.csv"
            subprocess.run(
                [sys.executable, "scripts/make_batch.py", str(args.storm), str(sample)],
                cwd=work,
                check=True,
                capture_output=True,
            )
            header, *lines = sample.read_text().splitlines()
            started = time.monotonic()
            for i, line in enumerate(lines):  # one row per file: every file's content differs
                (lake / f"batch-{i:05d}.csv").write_text(f"{header}\n{line}\n")
            run = wait_run(stack.url, run["id"])
            storm_runs = [
                r
                for r in requests.get(f"{stack.url}/api/runs", timeout=5).json()["runs"]
                if r["trigger"] == "data"
            ]
            print(
                f"event storm: {args.storm} files → {len(storm_runs)} run(s), "
                f"{len((run.get('classification') or {}).get('files', []))} files listed, "
                f"{time.monotonic() - started:.1f}s from first write to the run's end ({run['status']})"
            )
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'run':<34} {'ack→first stage':>16} {'wall':>8} {'stages':>8} {'overhead':>9} {'share':>6}")
    for name, m in rows:
        print(
            f"{name:<34} {m['to_first_stage']:>15.3f}s {m['wall']:>7.2f}s {m['own']:>7.2f}s "
            f"{m['overhead']:>8.2f}s {m['share']:>6.1%}"
        )
    apps = [m for name, m in rows if "app push" in name]
    if apps:
        print(
            f"\napp pushes: ack→first stage p50 {statistics.median(m['to_first_stage'] for m in apps):.3f}s, "
            f"orchestration overhead p50 {statistics.median(m['overhead'] for m in apps):.2f}s "
            f"({statistics.median(m['share'] for m in apps):.1%} of the run)"
        )


if __name__ == "__main__":
    main()
