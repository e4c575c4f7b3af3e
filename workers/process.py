"""Running project commands: argv lists, a scrubbed environment, a timeout, output to a log."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

#: Variables a project command may see; everything else (tokens, webhook secrets) stays out.
_PASS_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME")


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
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.write(f"\n[loopline] timed out after {timeout:.0f}s; stopping the command\n".encode())
        kill_group(proc.pid)
        proc.wait()
        return 124


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
