"""The sandbox around project commands, with real bubblewrap, setpriv and prlimit: what a
command can see, where it can write, and the limits that stop it (SPEC §7)."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workers import sandbox
from workers.process import run_logged

pytestmark = pytest.mark.skipif(
    sandbox.mode() != "bwrap", reason=f"bubblewrap is not usable here ({sandbox.describe()})"
)
SECRET = "s3cret-token-4711"


def _run(
    tmp_path: Path, script: str, *, limits: sandbox.Limits | None = None, **box: object
) -> tuple[int, str]:
    worktree = tmp_path / "home" / "work" / "1"
    worktree.mkdir(parents=True, exist_ok=True)
    (worktree / "probe.py").write_text(textwrap.dedent(script))
    log_file = tmp_path / "stage.log"
    with log_file.open("w+b") as log:
        code = run_logged(
            ["python", "probe.py"],
            cwd=worktree,
            log=log,
            timeout=60,
            box=sandbox.Box(worktree=worktree, limits=limits or sandbox.Limits(), **box),  # type: ignore[arg-type]
            mask=[SECRET],
        )
    return code, log_file.read_text(errors="replace")


def test_a_command_sees_no_secret_no_process_and_no_state_of_loopline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_API_TOKEN", SECRET)
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "loopline.db").write_text(SECRET)
    (home / "logs" / "other-run.log").write_text(SECRET)
    code, log = _run(
        tmp_path,
        f"""
        import os
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    found.append(open(f"/proc/{{pid}}/environ", "rb").read())
                except OSError:
                    pass
        print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        leak = any(b"{SECRET[:6]}" in env for env in found)
        print("leak" if leak else "no secret in", len(found), "environs")
        print("uid", os.getuid(), os.geteuid())
        readable = []
        for root, dirs, files in os.walk({str(home)!r}):
            for name in files:
                try:
                    open(os.path.join(root, name), "rb").read()
                    readable.append(os.path.join(root, name))
                except OSError:
                    pass
        print("readable", readable)
        print("shadow", os.access("/etc/shadow", os.R_OK))
        """,
    )
    assert code == 0, log
    assert "no secret in" in log and SECRET not in log and "leak" not in log
    assert "uid 65534 65534" in log
    pids = log.split("pids ")[1].splitlines()[0]
    assert max(eval(pids)) < 10  # its own PID namespace: none of Loopline's processes
    assert f"readable ['{home}/work/1/probe.py']" in log  # the worktree only: no database, no logs
    assert "shadow False" in log


def test_a_command_writes_only_its_worktree_and_tmp(tmp_path: Path) -> None:
    code, log = _run(
        tmp_path,
        f"""
        import os
        for path in ["out.txt", "/tmp/x", {str(tmp_path / "home" / "evil")!r}, {str(tmp_path / "evil")!r},
                     "/usr/evil", "/etc/evil", {sys.prefix + "/evil"!r}, "/evil"]:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, type(exc).__name__)
        """,
    )
    assert code == 0, log
    assert "wrote out.txt" in log and "wrote /tmp/x" in log
    assert log.count("refused") == 6, log
    assert not (tmp_path / "evil").exists() and not (tmp_path / "home" / "evil").exists()
    assert (tmp_path / "home" / "work" / "1" / "out.txt").read_text() == "x"


def test_a_fork_bomb_is_stopped_by_the_process_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    code, log = _run(
        tmp_path,
        """
        import os
        while True:
            os.fork()
        """,
        limits=sandbox.Limits(processes=64),
    )
    assert code != 0 and time.monotonic() - started < 30
    assert "stopped by a limit: more than 64 processes" in log, log[-2000:]


def test_a_memory_hog_is_stopped_by_the_memory_limit(tmp_path: Path) -> None:
    code, log = _run(tmp_path, "hog = bytearray(2 * 1024 ** 3)\n", limits=sandbox.Limits(memory_mb=512))
    assert code != 0
    assert "stopped by a limit: memory over 512 MiB" in log, log[-2000:]


def test_a_spinning_command_is_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    code, log = _run(tmp_path, "while True:\n    pass\n", limits=sandbox.Limits(cpu_seconds=1))
    assert code != 0
    assert "stopped by a limit: CPU time over 1s" in log, log[-2000:]


def test_the_log_is_capped_with_a_line_that_says_so_and_secrets_are_masked(tmp_path: Path) -> None:
    code, log = _run(
        tmp_path,
        f"""
        print("token is {SECRET}")
        for _ in range(30000):
            print("x" * 99)
        """,
        limits=sandbox.Limits(log_mb=1),
    )
    assert code == 0
    assert "token is ***" in log and SECRET not in log
    assert "[loopline] log truncated: output past 1 MiB was dropped" in log
    assert len(log) < 1024 * 1024 + 4096


def test_the_network_switch(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        script = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            print("reached")
        except OSError as exc:
            print("unreachable", exc)
        """
        assert "reached" in _run(tmp_path, script)[1].split("\n", 1)[1]
        assert "unreachable" in _run(tmp_path, script, network=False)[1]


def test_a_missing_program_is_exit_127(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w+b") as log:
        box = sandbox.Box(worktree=tmp_path)
        assert run_logged("no-such-program", cwd=tmp_path, log=log, timeout=5, box=box) == 127
    assert "cannot start 'no-such-program'" in (tmp_path / "log").read_text()
