"""Running project commands: argv lists, a scrubbed environment, a timeout, output to a log."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

#: Variables a project command may see; everything else (tokens, webhook secrets) stays out.
_PASS_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME")
#: How often a running command asks whether it should stop, and how long SIGTERM gets.
POLL_SECONDS = 0.5
STOP_GRACE = 10.0
#: Why the current stage must stop (a reason) or None; set by the runner around a step.
_stop_check: ContextVar[Callable[[], str | None] | None] = ContextVar("stop_check", default=None)
#: Told the process group of each command started; the runner records it with the stage's lease.
_on_start: ContextVar[Callable[[int], None] | None] = ContextVar("on_start", default=None)


@contextmanager
def stoppable(check: Callable[[], str | None]) -> Iterator[None]:
    """Commands started in this block are stopped (SIGTERM to the group, then SIGKILL after
    :data:`STOP_GRACE`) as soon as ``check()`` returns a reason; steps need not know."""
    token = _stop_check.set(check)
    try:
        yield
    finally:
        _stop_check.reset(token)


@contextmanager
def reporting(on_start: Callable[[int], None]) -> Iterator[None]:
    """``on_start(pgid)`` for every command started in this block (so a command a dead worker
    left running can be killed by whoever takes its stage over)."""
    token = _on_start.set(on_start)
    try:
        yield
    finally:
        _on_start.reset(token)


def project_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a project command: Loopline's own interpreter first on PATH."""
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "/usr/bin:/bin")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def argv_for(command: str | list[str]) -> list[str]:
    """Split a configured command into argv (no shell); ``python`` means Loopline's interpreter."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("empty command")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def run_logged(
    command: str | list[str],
    *,
    cwd: Path,
    log: IO[bytes],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run to completion, streaming output into ``log``; on timeout kill the whole process group."""
    argv = argv_for(command)
    log.write(f"$ {shlex.join(argv)}\n".encode())
    log.flush()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=project_env(env),
            start_new_session=True,
        )
    except OSError as exc:
        log.write(f"cannot start {argv[0]!r}: {exc}\n".encode())
        return 127
    if (on_start := _on_start.get()) is not None:
        on_start(proc.pid)
    check = _stop_check.get()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            log.write(f"\n[loopline] timed out after {timeout:.0f}s; stopping the command\n".encode())
            stop_group(proc)
            return 124
        if check is not None and (reason := check()):
            log.write(f"\n[loopline] stopping the command: {reason}\n".encode())
            log.flush()
            return stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace: float | None = None) -> int:
    """SIGTERM the command's process group, SIGKILL it after ``grace`` seconds; its exit code."""
    kill_group(proc.pid)
    try:
        return proc.wait(timeout=STOP_GRACE if grace is None else grace)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        return proc.wait()


def kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
