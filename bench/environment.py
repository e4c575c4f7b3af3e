"""Project environments and the sandbox: what they cost a run.

Usage: python bench/environment.py [--repeat 20] [--no-cold]

1. Environment resolution for the sample project (``examples/``, its ``requirements.txt``):
   - cold: an empty environment cache *and* an empty uv cache (every wheel from PyPI);
   - cold, warm uv cache: a new environment, wheels already downloaded (a second project or
     an evicted environment);
   - cache hit: what every stage after ``environment`` pays (median of ``--repeat``).
2. Sandbox start-up overhead per stage command: ``python -c pass`` (the environment's
   interpreter) in the sandbox against the same without one, and ``/bin/true`` both ways
   (medians of ``--repeat``).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.environment import EnvironmentConfig  # noqa: E402
from workers import environments, sandbox  # noqa: E402
from workers.process import run_logged  # noqa: E402

EXAMPLE = ROOT / "examples"


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def resolve(home: Path, worktree: Path) -> environments.Environment:
    return environments.ensure(home, EnvironmentConfig(), worktree, io.BytesIO(), limits=sandbox.Limits())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-cold", action="store_true", help="skip the build with an empty uv cache")
    args = parser.parse_args()
    print(sandbox.describe())
    with tempfile.TemporaryDirectory(prefix="bench-env-") as tmp:
        base = Path(tmp)
        worktree = base / "work"
        shutil.copytree(EXAMPLE, worktree, ignore=shutil.ignore_patterns("__pycache__", "models", "prepared"))
        home = base / "home"
        uv_cache = base / "uv-cache"
        os.environ["UV_CACHE_DIR"] = str(uv_cache)
        print("\n1. environment of examples/ (requirements.txt: scikit-learn, dvc, flask, pytest, …)")
        if not args.no_cold:
            os.environ["LOOPLINE_ENVIRONMENTS"] = str(base / "envs-cold")
            took = timed(lambda: resolve(home, worktree))
            print(f"  cold (empty uv cache: downloads from PyPI): {took:7.2f} s")
        else:  # fill uv's cache without timing it
            os.environ["LOOPLINE_ENVIRONMENTS"] = str(base / "envs-fill")
            resolve(home, worktree)
        os.environ["LOOPLINE_ENVIRONMENTS"] = str(base / "envs")
        took = timed(lambda: resolve(home, worktree))
        print(f"  cold (uv cache warm: copies, no downloads): {took:7.2f} s")
        env = resolve(home, worktree)
        hits = [timed(lambda: resolve(home, worktree)) for _ in range(args.repeat)]
        print(f"  cache hit (median of {args.repeat}):          {statistics.median(hits) * 1000:7.1f} ms")

        print("\n2. sandbox start-up per stage command (median of", args.repeat, "runs)")
        assert env.prefix is not None
        box = sandbox.Box(worktree=worktree, prefix=env.prefix)
        python = str(env.prefix / "bin" / "python")
        for label, argv in (("/bin/true", ["/bin/true"]), ("python -c pass", [python, "-c", "pass"])):
            bare = [
                timed(lambda a=argv: subprocess.run(a, cwd=worktree, check=True)) for _ in range(args.repeat)
            ]
            boxed = [
                timed(lambda a=argv: run_logged(a, cwd=worktree, log=io.BytesIO(), timeout=60, box=box))
                for _ in range(args.repeat)
            ]
            b, s = statistics.median(bare) * 1000, statistics.median(boxed) * 1000
            print(f"  {label:<15} bare {b:6.1f} ms   sandboxed {s:6.1f} ms   overhead {s - b:6.1f} ms")


if __name__ == "__main__":
    main()
