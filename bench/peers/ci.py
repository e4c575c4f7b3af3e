"""The peer benchmark project's steps, identical under Loopline and Buildbot.

``python ci.py unit|integration|deploy|train``. Each step does a small, fixed piece of real work
and prints ``PEER-STEP <name> <start> <end>`` (wall-clock seconds since the epoch, taken when
the interpreter starts running this file and when the step is done), so both systems' step
times are measured the same way: whatever is not inside a step is orchestration.
"""

from __future__ import annotations

import time

STARTED = time.time()

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402


def sources() -> list[Path]:
    return sorted(p for p in Path("app").rglob("*.py"))


def unit() -> None:
    """Compile every module and check the version constant: a stand-in for a unit suite."""
    for path in sources():
        compile(path.read_text(), str(path), "exec")
    digest = hashlib.sha256()
    for _ in range(20_000):  # a fixed amount of CPU, the same on both sides
        digest.update(b"loopline")
    print("unit: ok", len(sources()), "modules", digest.hexdigest()[:12])


def integration() -> None:
    """Loopline serves the candidate and names it in LOOPLINE_SERVE_URL; ask it for health."""
    url = os.environ.get("LOOPLINE_SERVE_URL")
    if url:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            print("integration: candidate", answer.status)
    else:
        print("integration: no candidate server (Buildbot has none to offer)")


def deploy() -> None:
    release = Path("release.json")
    release.write_text(json.dumps({"files": [str(p) for p in sources()], "at": time.time()}))
    print("deploy: wrote", release)


def train() -> None:
    """A tiny real model, so Loopline has one registered for its app-code runs."""
    import pickle

    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="most_frequent").fit([[0], [1], [1]], [0, 1, 1])
    Path("model.pkl").write_bytes(pickle.dumps(model))
    Path("metrics.json").write_text(json.dumps({"accuracy": 1.0}))
    print("train: model.pkl")


if __name__ == "__main__":
    step = sys.argv[1]
    {"unit": unit, "integration": integration, "deploy": deploy, "train": train}[step]()
    print(f"PEER-STEP {step} {STARTED:.6f} {time.time():.6f}", flush=True)
