"""A Git host that accepts connections and never answers fails a clone in bounded time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import gitops
from workers.gitops import GitError, Mirror


@pytest.fixture
def silent_host() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for sock in accepted:
        sock.close()


@pytest.mark.parametrize("scheme", ["http", "git"])
def test_a_silent_host_fails_the_clone_in_bounded_time_after_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_host: tuple[int, list[socket.socket]], scheme: str
) -> None:
    port, accepted = silent_host
    monkeypatch.setattr(gitops, "LOW_SPEED_TIME", 1)  # HTTP: too slow after a second
    monkeypatch.setattr(gitops, "FETCH_TIMEOUT", 3.0)  # git://: nothing but the overall bound
    monkeypatch.setattr(gitops, "FETCH_ATTEMPTS", 2)
    mirror = Mirror(path=tmp_path / "mirror.git", url=f"{scheme}://127.0.0.1:{port}/repo.git")
    started = time.monotonic()
    with pytest.raises(GitError, match="clone"):
        mirror.update()
    assert time.monotonic() - started < 20
    assert len(accepted) == 2  # retried once, on a new connection
