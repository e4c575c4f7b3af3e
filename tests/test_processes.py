"""``loopline up``'s supervisor: real child processes that exit or are killed come back, with
backoff while they keep exiting (``test_e2e.py`` kills the real worker under ``loopline up``)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from loopline.processes import Supervisor


def test_a_child_that_exits_is_started_again_with_backoff(tmp_path: Path) -> None:
    children = Supervisor(dict(os.environ), tmp_path)
    children.start("quits", [sys.executable, "-c", "print('quitting'); raise SystemExit(3)"])
    children.start("runs", [sys.executable, "-c", "import time; time.sleep(120)"])
    said: list[str] = []
    try:
        children.procs["quits"].wait(30)
        now = time.monotonic()
        assert children.supervise(said.append, now=now) == []
        assert said == ["quits exited with 3; starting it again in 2s"]  # soon after its start
        assert children.supervise(said.append, now=now + 1.9) == []
        assert children.supervise(said.append, now=now + 2) == ["quits"]
        children.procs["quits"].wait(30)
        assert children.supervise(said.append, now=now + 3) == []
        assert said[-1] == "quits exited with 3; starting it again in 4s"  # again: twice the wait
        assert children.supervise(said.append, now=now + 7) == ["quits"]
        assert (tmp_path / "quits.log").read_text().count("quitting") >= 2  # its log goes on

        killed = children.procs["runs"].pid
        os.kill(killed, signal.SIGKILL)
        children.procs["runs"].wait(30)
        deadline = time.monotonic() + 30
        while "runs" not in children.supervise(said.append) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"runs exited with {-signal.SIGKILL}; starting it again in 2s" in said
        assert children.procs["runs"].pid != killed and children.procs["runs"].poll() is None
        assert children.restarts == {"quits": 2, "runs": 1}
    finally:
        children.stop(grace=5)
    assert children.procs == {}
