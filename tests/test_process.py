"""Project commands: argv lists, a scrubbed environment, a timeout, output in the log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from workers.process import argv_for, project_env, run_logged


def test_secrets_never_reach_project_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_API_TOKEN", "tok")
    monkeypatch.setenv("CHURN_HOOK_SECRET", "sec")
    env = project_env({"LOOPLINE_SERVE_URL": "http://x"})
    assert "LOOPLINE_API_TOKEN" not in env and "CHURN_HOOK_SECRET" not in env
    assert env["LOOPLINE_SERVE_URL"] == "http://x"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_argv_is_split_without_a_shell() -> None:
    assert argv_for("pytest -q 'tests/unit dir'; rm -rf /") == [
        "pytest",
        "-q",
        "tests/unit dir;",
        "rm",
        "-rf",
        "/",
    ]
    assert argv_for("python -m app.server")[0] == sys.executable


def test_output_goes_to_the_log_and_the_exit_code_counts(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w+b") as log:
        code = run_logged(
            [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"],
            cwd=tmp_path,
            log=log,
            timeout=30,
        )
    assert code == 3 and b"hello" in (tmp_path / "log").read_bytes()


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc to see the child process")
def test_a_command_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    script = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "pathlib.Path('child.pid').write_text(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with (tmp_path / "log").open("w+b") as log:
        assert run_logged([sys.executable, "-c", script], cwd=tmp_path, log=log, timeout=2) == 124
    assert time.monotonic() - started < 10
    assert b"timed out after 2s" in (tmp_path / "log").read_bytes()
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)  # the whole group was stopped


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_a_missing_program_is_a_failed_stage_not_a_crash(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w+b") as log:
        assert run_logged("no-such-program --x", cwd=tmp_path, log=log, timeout=5) == 127
    assert b"cannot start 'no-such-program'" in (tmp_path / "log").read_bytes()
