#!/usr/bin/env python3
"""Loopline beside a peer CI system: Buildbot, on the same machine and the same signed payloads.

Two phases, everything on 127.0.0.1, bounded in time:

1. Webhook acknowledgement. Loopline's web process (gunicorn, ``-w 2 -k gthread --threads 4``
   as the Procfile runs it) and Buildbot's master with its GitHub change hook (SHA-1 signature,
   strict) take the same signed push payload for a branch neither builds, under the same load
   (wrk, else a Python client): answered req/s, p50/p99 latency, server CPU per request. Both
   store each delivery before answering (Loopline a ``deliveries`` row, Buildbot a change), both
   on SQLite.
2. Push to steps. A throw-away Git project whose app-code run is three shell steps
   (``python ci.py unit|integration|deploy``, bench/peers/ci.py) is pushed ``--pushes`` times.
   Each push's payload (the real before/after commits) goes to Loopline (web, worker and
   trainer as ``loopline up`` runs them) and to Buildbot (master plus one worker), one after
   the other, alternating who goes first. Per run: push → first step started (the webhook
   POST to the first step's own start stamp), wall time (POST to the run seen finished) and
   orchestration overhead (wall time minus the steps' own time, both stamped inside the steps).

Loopline's app-code run does more than Buildbot's: its integration stage serves the candidate
model first, and its deploy stage starts a release and checks its health instead of running
``ci.py deploy``. All of that counts as Loopline's overhead here.

Buildbot is a bench-only dependency (the ``bench`` group in pyproject.toml); this script installs
it into its own virtualenv (``--venv``) so its pins never meet Loopline's.

    python bench/peers/peers.py                 # ~3 min (+1 min the first time: the venv)
    python bench/peers/peers.py --pushes 8 --duration 10
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

PEERS = Path(__file__).resolve().parent
BENCH = PEERS.parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import ack  # noqa: E402  (bench/ack.py: gunicorn, wrk and the Python client)

from loopline.processes import Stack  # noqa: E402

HOST = "127.0.0.1"
SECRET = "peer-bench-secret"
FULL_NAME = "bench/peer"
STAMP = re.compile(r"PEER-STEP (\w+) ([\d.]+) ([\d.]+)")
SKLEARN = next(
    line
    for line in (ROOT / "examples" / "requirements.txt").read_text().splitlines()
    if line.startswith("scikit-learn")
)
ENVIRONMENTS = Path.home() / ".cache" / "loopline-bench" / "environments"  # built once, by the warm-up push
TERMINAL = {"succeeded", "failed", "skipped", "cancelled", "gate_failed"}
LOOPLINE_YML = """\
model: {name: peer, artifact: model.pkl, metrics: metrics.json}
classify: {training_code: ["train/**"]}
stages:
  unit_tests: "python ci.py unit"
  retrain: "python ci.py train"
  integration_tests: "python ci.py integration"
  deploy: {target: local}
gate: {metric: accuracy, min: 0.5}
"""


# ------------------------------------------------------------------------------------------ set-up


def bench_venv(venv: Path) -> Path:
    """The ``bench`` dependency group installed into its own virtualenv; returns its bin/."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    wanted = [str(r) for r in groups["bench"]]
    stamp = venv / ".loopline-bench"
    if not stamp.is_file() or stamp.read_text() != "\n".join(wanted):
        print(f"installing {', '.join(wanted)} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *wanted], check=True)
        stamp.write_text("\n".join(wanted))
    return venv / "bin"


def git(*argv: str, cwd: Path) -> str:
    out = subprocess.run(["git", *argv], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_project(work: Path, remote: Path) -> None:
    (work / "app").mkdir(parents=True)
    (work / "train").mkdir()
    shutil.copy(PEERS / "ci.py", work / "ci.py")
    (work / "loopline.yml").write_text(LOOPLINE_YML)
    (work / "app" / "__init__.py").write_text("")
    (work / "app" / "version.py").write_text("VERSION = 0\n")
    (work / "train" / "params.json").write_text('{"strategy": "most_frequent"}\n')
    # The project's environment (Loopline runs every stage and the model server in it): ci.py
    # train and unpickling the model need scikit-learn; the sample project's pin, so uv's cache has it.
    (work / "requirements.txt").write_text(f"{SKLEARN}\n")
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=work.parent)
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "bench@loopline.invalid", cwd=work)
    git("config", "user.name", "Loopline bench", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "peer project", cwd=work)
    git("remote", "add", "origin", str(remote), cwd=work)


def push_payload(before: str, after: str, message: str, files: list[str], *, ref: str) -> bytes:
    """What GitHub sends for a one-commit push (the keys both hooks read)."""
    person = {"name": "Loopline bench", "email": "bench@loopline.invalid", "username": "bench"}
    commit = {
        "id": after,
        "message": message,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": f"https://github.invalid/{FULL_NAME}/commit/{after}",
        "author": person,
        "committer": person,
        "added": [],
        "removed": [],
        "modified": files,
        "distinct": True,
    }
    payload = {
        "ref": ref,
        "before": before,
        "after": after,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {
            "name": "peer",
            "full_name": FULL_NAME,
            "html_url": f"https://github.invalid/{FULL_NAME}",
            "clone_url": f"https://github.invalid/{FULL_NAME}.git",
        },
        "pusher": {"name": "bench", "email": "bench@loopline.invalid"},
        "sender": {"login": "bench"},
        "head_commit": commit,
        "commits": [commit],
    }
    return json.dumps(payload).encode()


def signatures(body: bytes) -> tuple[str, str]:
    """``X-Hub-Signature-256`` and ``X-Hub-Signature``, as GitHub sends both."""
    sha256 = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return sha256, sha1


def post(url: str, body: bytes) -> requests.Response:
    sha256, sha1 = signatures(body)
    headers = ack._headers(sha256, f"peer-{uuid.uuid4().hex}", sha1)
    return requests.post(url, data=body, headers=headers, timeout=30)


class Procs:
    """Processes started here, each in its own group; stopped at exit, also on Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            ack.stop_server(proc)
        self.procs.clear()


def wait_until(what: str, check: Any, timeout: float, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


class Buildbot:
    def __init__(self, bin_dir: Path, root: Path, remote: Path, procs: Procs) -> None:
        self.bin, self.root, self.procs = bin_dir, root, procs
        self.port, pb = ack.free_port(), ack.free_port()
        self.url = f"http://{HOST}:{self.port}"
        password = secrets.token_hex(8)
        self.env = {
            **os.environ,
            "PEER_HTTP_PORT": str(self.port),
            "PEER_PB_PORT": str(pb),
            "PEER_REPO": str(remote),
            "PEER_HOOK_SECRET": SECRET,
            "PEER_WORKER_PASSWORD": password,
            "PEER_PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        self.master, self.worker = root / "master", root / "worker"
        run = {"cwd": root, "env": self.env, "check": True, "capture_output": True}
        subprocess.run([str(bin_dir / "buildbot"), "create-master", "-q", str(self.master)], **run)  # type: ignore[call-overload]
        shutil.copy(PEERS / "master.cfg", self.master / "master.cfg")
        subprocess.run(  # type: ignore[call-overload]
            [
                str(bin_dir / "buildbot-worker"),
                "create-worker",
                "-q",
                str(self.worker),
                f"{HOST}:{pb}",
                "bench",
                password,
            ],
            **run,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start_master(self) -> None:
        self.proc = self.procs.start(
            [str(self.bin / "buildbot"), "start", "--nodaemon", str(self.master)],
            cwd=self.root,
            env=self.env,
            log=self.root / "master.out",
        )
        wait_until("Buildbot's master", lambda: requests.get(f"{self.url}/api/v2/builders", timeout=2).ok, 90)

    def start_worker(self) -> None:
        self.procs.start(
            [str(self.bin / "buildbot-worker"), "start", "--nodaemon", str(self.worker)],
            cwd=self.root,
            env=self.env,
            log=self.root / "worker.out",
        )

        def connected() -> bool:
            workers = requests.get(f"{self.url}/api/v2/workers", timeout=2).json()["workers"]
            return any(w["connected_to"] for w in workers)

        wait_until("Buildbot's worker to connect", connected, 60)

    def api(self, path: str) -> Any:
        return requests.get(f"{self.url}/api/v2/{path}", timeout=10).json()

    def last_build(self) -> int:
        builds = self.api("builds?order=-buildid&limit=1")["builds"]
        return int(builds[0]["buildid"]) if builds else 0

    def run(self, body: bytes, timeout: float) -> dict[str, Any]:
        after = self.last_build()
        sent = time.time()
        answer = post(f"{self.url}/change_hook/github", body)
        if answer.status_code != 200:
            raise SystemExit(f"Buildbot answered {answer.status_code}: {answer.text[:300]}")

        def done() -> dict[str, Any] | None:
            builds = self.api(f"builds?buildid__gt={after}&order=buildid")["builds"]
            return builds[0] if builds and builds[0]["complete"] else None

        build = wait_until("a Buildbot build", done, timeout, poll=0.02)
        finished = time.time()
        text = ""
        for step in self.api(f"builds/{build['buildid']}/steps")["steps"]:
            for log in self.api(f"steps/{step['stepid']}/logs")["logs"]:
                text += requests.get(f"{self.url}/api/v2/logs/{log['logid']}/raw", timeout=10).text
        ok = build["results"] == 0
        return measure("buildbot", sent, finished, text, ok=ok)


def loopline_env(root: Path, remote: Path) -> dict[str, str]:
    """Loopline's environment with its own home under ``root`` and the peer project registered
    (SQLite, the embedded broker: the same footing as Buildbot's defaults)."""
    root.mkdir(exist_ok=True)
    config = root / "loopline.yaml"
    repo = {
        "name": "peer",
        "provider": "github",
        "match": FULL_NAME,
        "url": str(remote),
        "secret_env": "PEER_HOOK_SECRET",
        "branches": ["main"],
    }
    config.write_text(json.dumps({"repositories": [repo]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_HOME=str(root / "home"),
        LOOPLINE_CONFIG=str(config),
        LOOPLINE_ENVIRONMENTS=str(ENVIRONMENTS),
        PEER_HOOK_SECRET=SECRET,
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


class Loopline:
    def __init__(self, root: Path, remote: Path) -> None:
        self.env = loopline_env(root, remote)
        self.stack = Stack(self.env, ack.free_port())
        self.url = self.stack.url

    def run(self, body: bytes, timeout: float) -> dict[str, Any]:
        sent = time.time()
        answer = post(f"{self.url}/hooks/github", body)
        if answer.status_code != 202:
            raise SystemExit(f"Loopline answered {answer.status_code}: {answer.text[:300]}")
        event = answer.json()["event_id"]

        def run_id() -> int | None:
            ids = requests.get(f"{self.url}/api/events/{event}", timeout=5).json().get("run_ids") or []
            return ids[0] if ids else None

        def done() -> dict[str, Any] | None:
            rid = run_id()
            run = requests.get(f"{self.url}/api/runs/{rid}", timeout=5).json() if rid else None
            return run if run and run["status"] in TERMINAL else None

        run = wait_until("a Loopline run", done, timeout, poll=0.02)
        finished = time.time()
        text = "".join(
            requests.get(f"{self.url}/api/runs/{run['id']}/stages/{s['name']}/log", timeout=10).text
            for s in run["stages"]
            if s["started_at"]
        )
        result = measure("loopline", sent, finished, text, ok=run["status"] == "succeeded")
        result["stages"] = {s["name"]: s["duration_seconds"] for s in run["stages"] if s["started_at"]}
        return result


def measure(system: str, sent: float, finished: float, log: str, *, ok: bool) -> dict[str, Any]:
    stamps = {name: (float(a), float(b)) for name, a, b in STAMP.findall(log)}
    if not ok or "unit" not in stamps:
        raise SystemExit(f"{system}: the run did not succeed; its steps' logs:\n{log[-3000:]}")
    own = sum(b - a for a, b in stamps.values())
    wall = finished - sent
    return {
        "first_step": stamps["unit"][0] - sent,
        "wall": wall,
        "steps": own,
        "overhead": wall - own,
        "shell_steps": len(stamps),
    }


# ------------------------------------------------------------------------------------- the phases


def acknowledgement(
    args: argparse.Namespace, root: Path, work: Path, remote: Path, buildbot: Buildbot
) -> dict[str, ack.Result]:
    """Phase 1: the same signed payload, for a branch nobody builds, at both hooks."""
    head = git("rev-parse", "HEAD", cwd=work)
    body = push_payload(head, head, "ack load", ["app/version.py"], ref="refs/heads/ack-load")
    sha256, sha1 = signatures(body)
    body_path, script = root / "ack-body.json", root / "ack.lua"
    body_path.write_bytes(body)
    script.write_text(ack.WRK_SCRIPT)
    env = loopline_env(root / "ack", remote)
    gargs = argparse.Namespace(workers=2, worker_class="gthread", threads=4)
    proc, port = ack.start_gunicorn(
        "loopline-ack",
        "service:create_app()",
        cwd=ROOT,
        env=env,
        args=gargs,
        logdir=root,
        health="/healthz",
        extra=[],
    )
    targets = {
        "loopline": (port, "/hooks/github", proc.pid),
        "buildbot": (buildbot.port, "/change_hook/github", buildbot.proc.pid if buildbot.proc else 0),
    }
    load = argparse.Namespace(max_requests=args.max_requests, wrk_threads=1, connections=args.connections)
    results: dict[str, ack.Result] = {}
    for name, (target_port, path, pid) in targets.items():
        answer = post(f"http://{HOST}:{target_port}{path}", body)
        if answer.status_code not in (200, 202):
            raise SystemExit(f"{name} refused a signed delivery: {answer.status_code} {answer.text[:300]}")
        for seconds, measured in ((args.warmup, False), (args.duration, True)):
            before = ack.server_cpu_seconds(pid)
            common: dict[str, Any] = {
                "seconds": seconds,
                "args": load,
                "prefix": f"{name}-{uuid.uuid4().hex[:8]}",
            }
            if args.client == "wrk":
                result = ack.run_wrk(
                    target_port,
                    signature=sha256,
                    body_path=body_path,
                    script=script,
                    path=path,
                    sha1_signature=sha1,
                    **common,
                )
            else:
                result = ack.run_python(
                    target_port, signature=sha256, body=body, path=path, sha1_signature=sha1, **common
                )
            after = ack.server_cpu_seconds(pid)
            if before is not None and after is not None:
                result.cpu_s = after - before
            if measured:
                results[name] = result
    ack.stop_server(proc)
    return results


def pipeline(
    args: argparse.Namespace, work: Path, loopline: Loopline, buildbot: Buildbot
) -> dict[str, list[dict[str, Any]]]:
    """Phase 2: one warm-up push (Loopline trains its first model on it), then ``--pushes``."""
    rows: dict[str, list[dict[str, Any]]] = {"loopline": [], "buildbot": []}
    before = "0" * 40
    for i in range(args.pushes + 1):
        if i:
            (work / "app" / "version.py").write_text(f"VERSION = {i}\n")
            git("commit", "-qam", f"app change {i}", cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        after = git("rev-parse", "HEAD", cwd=work)
        files = (
            ["app/version.py"]
            if i
            else ["ci.py", "loopline.yml", "requirements.txt", "app/version.py", "train/params.json"]
        )
        body = push_payload(before, after, f"push {i}", files, ref="refs/heads/main")
        before = after
        systems: dict[str, Loopline | Buildbot] = {"loopline": loopline, "buildbot": buildbot}
        for name in sorted(systems, reverse=i % 2 == 0):  # who goes first alternates
            result = systems[name].run(body, args.run_timeout)
            label = "warm-up" if i == 0 else f"push {i}"
            print(
                f"  {label:<8} {name:<9} first step {result['first_step']:6.3f}s  "
                f"wall {result['wall']:6.2f}s  steps {result['steps']:5.2f}s  "
                f"overhead {result['overhead']:5.2f}s"
                + "".join(f"  {k} {v:.2f}s" for k, v in result.get("stages", {}).items()),
                flush=True,
            )
            if i:
                rows[name].append(result)
    return rows


def report(ack_results: dict[str, ack.Result] | None, rows: dict[str, list[dict[str, Any]]]) -> None:
    keys = ("first_step", "wall", "steps", "overhead")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in rows.items()}
    print("\npush → steps (medians over the measured pushes)")
    print(f"  {'system':<10} {'first step':>11} {'wall':>8} {'steps':>8} {'overhead':>9}")
    for name, m in med.items():
        print(
            f"  {name:<10} {m['first_step']:>10.3f}s {m['wall']:>7.2f}s {m['steps']:>7.2f}s "
            f"{m['overhead']:>8.2f}s"
        )
    if ack_results is not None:
        _report_ack(ack_results)
    print("\nratios, Loopline / Buildbot (below 1: Loopline is faster or cheaper; above 1 for req/s: more)")
    if ack_results is not None:
        lo, bb = ack_results["loopline"], ack_results["buildbot"]
        print(f"  ack req/s                 {lo.rps / bb.rps:6.2f}")
        print(f"  ack p99                   {lo.p99_ms / bb.p99_ms:6.2f}")
    for key, label in (
        ("first_step", "push → first step"),
        ("overhead", "orchestration overhead"),
        ("wall", "run wall time"),
    ):
        print(f"  {label:<25} {med['loopline'][key] / med['buildbot'][key]:6.2f}")


def _report_ack(ack_results: dict[str, ack.Result]) -> None:
    print("\nwebhook acknowledgement (same signed payload, same load)")
    print(
        f"  {'target':<36} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10} "
        f"{'2xx':>7} {'other':>6} {'errors':>6}"
    )
    for name, label in (
        ("loopline", "Loopline POST /hooks/github"),
        ("buildbot", "Buildbot POST /change_hook/github"),
    ):
        r = ack_results[name]
        cpu = f"{r.cpu_ms_per_req:.3f}" if r.cpu_ms_per_req is not None else "n/a"
        print(
            f"  {label:<36} {r.rps:>7.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {cpu:>10} {r.s202 + r.s200:>7} "
            f"{r.other:>6} {r.errors:>6}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pushes", type=int, default=5, help="measured pushes after the warm-up push (5)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of measured ack load per target (8)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured ack load first (2)")
    ap.add_argument("--connections", "-c", type=int, default=8, help="concurrent connections (8)")
    ap.add_argument("--max-requests", type=int, default=100_000, help="ack requests per target at most")
    ap.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--run-timeout", type=float, default=180.0, help="seconds one run may take (180)")
    ap.add_argument("--skip-ack", action="store_true", help="only the push → steps phase")
    ap.add_argument(
        "--venv",
        type=Path,
        default=Path.home() / ".cache" / "loopline-bench" / "buildbot-venv",
        help="virtualenv for Buildbot (created and filled from the bench dependency group)",
    )
    args = ap.parse_args()
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "python"
    bin_dir = bench_venv(args.venv)
    root = Path(tempfile.mkdtemp(prefix="loopline-peers-"))
    procs = Procs()
    loopline: Loopline | None = None

    def cleanup() -> None:
        if loopline is not None:
            loopline.stack.stop()
        procs.stop()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    work, remote = root / "work", root / "remote.git"
    make_project(work, remote)
    (root / "buildbot").mkdir()
    buildbot = Buildbot(bin_dir, root / "buildbot", remote, procs)
    print(f"machine: {os.cpu_count()} CPUs, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    buildbot.start_master()
    ack_results = None if args.skip_ack else acknowledgement(args, root, work, remote, buildbot)
    buildbot.start_worker()
    loopline = Loopline(root / "loopline", remote)
    loopline.stack.start()
    print(f"\npush → steps: {args.pushes} measured pushes after one warm-up, alternating who goes first")
    report(ack_results, pipeline(args, work, loopline, buildbot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
