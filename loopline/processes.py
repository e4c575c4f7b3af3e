"""Run Loopline's processes together (``loopline up`` and the demo): web, workers, watcher.

Each is a real child process with its own log under ``LOOPLINE_HOME/logs``. ``loopline up``
starts a child that exits again, with backoff: a Redis restart can end a Celery worker's main
process (kombu raises on the dead connection), and nothing else would bring it back. Not honcho:
it stops every process when one exits and restarts none, which is the opposite of what is needed
here; the restart loop below is the whole of what a supervisor adds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


#: A child that exits is started again after 1 s, doubling while it keeps exiting (at most a
#: minute apart); one that ran for RESTART_RESET seconds first starts from 1 s again.
RESTART_FIRST, RESTART_MAX, RESTART_RESET = 1.0, 60.0, 60.0


class Supervisor:
    """Child processes by name, each in its own session with its log in ``logs``."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.commands: dict[str, list[str]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}  # how often each child was started again
        self._started: dict[str, float] = {}
        self._failures: dict[str, int] = {}  # exits in a row, each soon after its start
        self._restart_at: dict[str, float] = {}

    def start(self, name: str, argv: list[str]) -> None:
        self.commands[name] = argv
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                self.commands[name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._started[name] = time.monotonic()

    def exited(self) -> dict[str, int]:
        """The children that are not running, with their exit status."""
        return {name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None}

    def supervise(self, say: Callable[[str], None] = logger.warning, now: float | None = None) -> list[str]:
        """Start again each child that exited, once its backoff passed; returns those started.

        What an exited child left in its session (a Celery worker's pool processes, orphaned when
        its main process died) is killed first: it would hold the old worker's messages.
        """
        now = time.monotonic() if now is None else now
        started = []
        for name, code in self.exited().items():
            if name not in self._restart_at:
                soon = now - self._started[name] < RESTART_RESET
                self._failures[name] = self._failures.get(name, 0) + 1 if soon else 0
                delay = min(RESTART_MAX, RESTART_FIRST * 2 ** self._failures[name])
                self._restart_at[name] = now + delay
                say(f"{name} exited with {code}; starting it again in {delay:.0f}s")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.procs[name].pid, signal.SIGKILL)
            elif now >= self._restart_at[name]:
                del self._restart_at[name]
                self._spawn(name)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                started.append(name)
                say(f"{name} started again (pid {self.procs[name].pid})")
        return started

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to each child's whole session, SIGKILL to what is left after ``grace``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        self._restart_at.clear()


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
        self.children = Supervisor(env, self.settings.home / "logs")

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
            self.children.start(name, argv)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, code in self.children.exited().items():
                raise StackError(
                    f"{name} exited with {code}; see {self.settings.home / 'logs' / (name + '.log')}"
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
        """Fail when a process exited (the tests and the demo: nothing should)."""
        for name, code in self.children.exited().items():
            raise StackError(f"{name} exited with {code}")

    def supervise(self, say: Callable[[str], None]) -> None:
        """Start again what exited (``loopline up``: a server keeps running)."""
        self.children.supervise(say)

    def stop(self) -> None:
        """Stop the model servers Loopline started, then its own processes and broker."""
        if self.children.procs:
            self.stop_deployments()
        self.children.stop()
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
