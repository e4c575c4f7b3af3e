"""Start, health-check and stop model-serving processes (integration tests and deploys)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from pipelines.errors import LooplineError
from workers import model_server, sandbox
from workers.process import argv_for, kill_group, project_env

BUILTIN_SERVER = [sys.executable, "-m", "workers.model_server"]
#: The built-in server as a script (stdlib only), for a sandbox that sees this one file of Loopline.
BUILTIN_SCRIPT = Path(model_server.__file__).resolve()


class ServeError(LooplineError, RuntimeError):
    pass


#: The servers this process started, until :func:`stop` reaps them (no zombies, no
#: "still running" warnings when a ``Popen`` is garbage-collected). Another process may
#: stop them (the CLI's rollback): those are reaped at exit.
_started: dict[int, subprocess.Popen[bytes]] = {}
atexit.register(lambda: [proc.poll() for proc in _started.values()])


@dataclass(frozen=True)
class Server:
    pid: int
    url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def advertised(address: str) -> str:
    """``LOOPLINE_SERVING_ADDRESS`` as other hosts use it: ``auto`` is this host's address."""
    return socket.gethostbyname(socket.gethostname()) if address == "auto" else address


def start(
    *,
    cwd: Path,
    command: str | None,
    model_path: Path,
    sha256: str,
    log_file: Path,
    health_path: str = "/healthz",
    timeout: float = 60,
    address: str = "127.0.0.1",
    box: sandbox.Box | None = None,
) -> Server:
    """Start a server for ``model_path`` on a free port and wait until it answers healthy.

    The process gets its own session so that it outlives the worker that started it. Its URL
    names ``address`` (:func:`advertised`); a server registered under any other address than
    127.0.0.1 listens on every interface (``HOST=0.0.0.0``), so other hosts reach it. With
    ``box`` it runs in the sandbox (the artifact bound read-only, the host's network shared).
    """
    port = free_port()
    host = advertised(address)
    extra = {
        "PORT": str(port),
        "HOST": host if host in ("127.0.0.1", "localhost") else "0.0.0.0",  # noqa: S104
        "LOOPLINE_MODEL_PATH": str(model_path),
        "LOOPLINE_MODEL_SHA256": sha256,
    }
    if box is None:
        argv = argv_for(command) if command else list(BUILTIN_SERVER)
        env = project_env(extra)
    else:
        box = replace(box, read=(*box.read, model_path, BUILTIN_SCRIPT), network=True, detached=True)
        env = sandbox.environment(box, extra)
        try:
            argv = sandbox.resolve(argv_for(command or ["python", str(BUILTIN_SCRIPT)], python=None), env)
        except FileNotFoundError as exc:
            raise ServeError(str(exc)) from exc
        sandbox.prepare(box)
        argv = sandbox.wrap(argv, box, cwd=cwd)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _started[proc.pid] = proc
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _started.pop(proc.pid, None)
            raise ServeError(
                f"server exited with status {proc.returncode} before it was healthy; see {log_file}"
            )
        try:
            if requests.get(url + health_path, timeout=1).status_code == 200:
                return Server(pid=proc.pid, url=url)
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop(proc.pid)
    raise ServeError(f"server did not become healthy within {timeout:.0f}s; see {log_file}")


def stop(pid: int, grace: float = 5) -> None:
    """Stop a server's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    kill_group(pid, signal.SIGTERM)
    proc = _started.pop(pid, None)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            break
        time.sleep(0.05)
    else:
        kill_group(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a dead one that its parent (another process, which started
    it) has not reaped yet is not (a zombie still answers signal 0)."""
    if pid in _started:
        return _started[pid].poll() is None
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """``pid`` exited and waits for its parent to reap it (Linux's ``/proc``; elsewhere: no)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
