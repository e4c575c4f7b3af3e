"""Running project commands: argv lists, a scrubbed environment, a timeout, output to a log."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from workers import sandbox

#: Variables a project command may see; everything else (tokens, webhook secrets) stays out.
_PASS_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME")
#: How often a running command asks whether it should stop, and how long SIGTERM gets.
POLL_SECONDS = 0.5
STOP_GRACE = 10.0
#: Output kept in memory to tell which limit ended a command; longest line masked whole.
TAIL_BYTES = 8192
MAX_LINE = 1 << 20
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


def argv_for(command: str | list[str], *, python: str | None = sys.executable) -> list[str]:
    """Split a configured command into argv (no shell); ``python`` means ``python`` (Loopline's
    interpreter by default; ``None``: whatever ``python`` is on the command's PATH)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("empty command")
    if argv[0] in ("python", "python3") and python is not None:
        argv[0] = python
    return argv


def run_logged(
    command: str | list[str],
    *,
    cwd: Path,
    log: IO[bytes],
    timeout: float,
    env: Mapping[str, str] | None = None,
    box: sandbox.Box | None = None,
    mask: Iterable[str] = (),
) -> int:
    """Run to completion, streaming output into ``log``; on timeout kill the whole process group.

    With ``box`` the command runs in the sandbox (its environment is ``env`` and nothing of
    Loopline's); ``mask``: values (secrets) written as ``***``. Output past the box's log limit
    is dropped with a line that says so.
    """
    if box is None:
        argv = argv_for(command)
        full_env, wrapped = project_env(env), argv
    else:
        full_env = sandbox.environment(box, env)
        try:
            argv = sandbox.resolve(argv_for(command, python=None), full_env)
        except FileNotFoundError as exc:
            log.write(f"cannot start {argv_for(command, python=None)[0]!r}: {exc}\n".encode())
            return 127
        sandbox.prepare(box)
        wrapped = sandbox.wrap(argv, box, cwd=cwd)
    log.write(f"$ {shlex.join(argv)}\n".encode())
    log.flush()
    try:
        proc = subprocess.Popen(
            wrapped,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        log.write(f"cannot start {argv[0]!r}: {exc}\n".encode())
        return 127
    if (on_start := _on_start.get()) is not None:
        on_start(proc.pid)
    limits = box.limits if box else sandbox.Limits()
    pump = _Pump(proc, log, cap=limits.log_mb * 1024 * 1024, mask=mask)
    code = _wait(proc, log, timeout)
    pump.finish()
    if box is not None and code != 0 and (reason := _limit_hit(code, pump.tail, limits)):
        log.write(f"\n[loopline] stopped by a limit: {reason}\n".encode())
    log.flush()
    return code


def _wait(proc: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> int:
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


class _Pump:
    """Copies a command's output into its log: secrets masked, at most ``cap`` bytes kept.

    Lines are masked whole (a secret split across two reads would slip through otherwise); a
    line longer than :data:`MAX_LINE` is written as it is.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], log: IO[bytes], *, cap: int, mask: Iterable[str]
    ) -> None:
        assert proc.stdout is not None
        self._source, self._log, self._cap = proc.stdout, log, cap
        self._mask = sorted({m.encode() for m in mask if m}, key=len, reverse=True)
        self.written = 0
        self.dropped = 0
        self.tail = b""
        self._thread = threading.Thread(target=self._run, name="log-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        fd = self._source.fileno()
        while chunk := os.read(fd, 65536):
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut == 0 and len(pending) < MAX_LINE:
                continue
            ready, pending = (pending[:cut], pending[cut:]) if cut else (pending, b"")
            self._write(ready)
        self._write(pending)

    def _write(self, data: bytes) -> None:
        for secret in self._mask:
            data = data.replace(secret, b"***")
        self.tail = (self.tail + data)[-TAIL_BYTES:]
        room = self._cap - self.written
        if room <= 0:
            self.dropped += len(data)
            return
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self._log.write(data)
        self._log.flush()
        self.written += len(data)

    def finish(self) -> None:
        """Wait for the output to end (a stray background child may hold it open: not forever)."""
        self._thread.join(timeout=STOP_GRACE)
        if self.dropped:
            self._log.write(
                f"\n[loopline] log truncated: output past {self._cap // (1024 * 1024)} MiB was dropped "
                f"({self.dropped} bytes)\n".encode()
            )
        self._source.close()


def _limit_hit(code: int, tail: bytes, limits: sandbox.Limits) -> str | None:
    """Which limit most likely ended a failed command, from its exit status and last output."""
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return f"CPU time over {limits.cpu_seconds}s (sandbox.cpu_seconds)"
    if any(m in tail for m in (b"MemoryError", b"Cannot allocate memory", b"bad_alloc", b"out of memory")):
        return f"memory over {limits.memory_mb} MiB (sandbox.memory_mb)"
    if b"Resource temporarily unavailable" in tail:
        return f"more than {limits.processes} processes (sandbox.processes)"
    return None


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


def wait_gone(pgid: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until the process group is gone (an unreaped zombie keeps it until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
