"""Run Loopline's processes together (``loopline up`` and the demo): web, workers, watcher.

Each is a real child process with its own log under ``LOOPLINE_HOME/logs``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from config.settings import Settings
from loopline.broker import EmbeddedRedis
from pipelines.errors import LooplineError
from store.db import Database
from workers import releases

logger = logging.getLogger(__name__)


class StackError(LooplineError, RuntimeError):
    pass


def celery_worker_argv(queue: str, *, concurrency: int, relay: bool, beat: bool, home: Path) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        queue,
        "-c",
        str(concurrency),
        "-n",
        f"{queue}@%h",
        "--loglevel",
        "INFO",
        "--relay" if relay else "--no-relay",
    ]
    if beat:
        argv += ["--beat", "--schedule", str(home / "celerybeat-schedule")]
    return argv


class Stack:
    """The whole of Loopline on one machine, embedded broker included unless one is configured."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.settings = Settings.from_env(env)
        self.redis: EmbeddedRedis | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Stack:
        home = self.settings.home
        (home / "logs").mkdir(parents=True, exist_ok=True)
        if "LOOPLINE_BROKER_URL" not in self.env:
            self.redis = EmbeddedRedis(home).start()
            self.env["LOOPLINE_BROKER_URL"] = self.redis.url
        db = Database(self.settings.database_url)
        try:
            db.migrate()  # once, before the children race for it
            releases.restore(self.settings, db, logger.info)  # what served when Loopline last stopped
        finally:
            db.dispose()
        commands = {
            "web": [sys.executable, "-m", "loopline", "serve", "--port", str(self.port)],
            "worker": celery_worker_argv("default", concurrency=2, relay=True, beat=True, home=home),
            "trainer": celery_worker_argv("training", concurrency=1, relay=False, beat=False, home=home),
            "watcher": [sys.executable, "-m", "loopline", "watch"],
        }
        for name, argv in commands.items():
            with (home / "logs" / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    argv,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with {proc.returncode}; see "
                        f"{self.settings.home / 'logs' / (name + '.log')}"
                    )
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok and self._workers_ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise StackError(
            f"Loopline did not come up within {timeout:.0f}s; logs in {self.settings.home / 'logs'}"
        )

    def _workers_ready(self) -> bool:
        logs = self.settings.home / "logs"
        return all("ready." in (logs / f"{n}.log").read_text(errors="replace") for n in ("worker", "trainer"))

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}")

    def stop(self) -> None:
        """Stop the model servers Loopline started, then its own processes and broker."""
        if self.procs:
            self.stop_deployments()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self.redis:
            self.redis.stop()

    def stop_deployments(self) -> None:
        """Stop the release processes; their states stay, so the next start restores them."""
        db = Database(self.settings.database_url)
        try:
            releases.stop_all(db, self.settings.host)
        finally:
            db.dispose()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:  # Ctrl-C or a failure while starting: stop what did start
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
