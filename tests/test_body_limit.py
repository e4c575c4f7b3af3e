"""Bodies over ``max_body_bytes`` get a JSON 413 on every POST endpoint, on real servers.

The Flask test client never chunks, so these tests speak HTTP over a socket to Werkzeug's
server (in a thread) and to gunicorn (``loopline serve``, as deployed). Each request stops
sending early: a 413 that arrives anyway proves the server did not wait for (or buffer) the
whole body.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server

from pipelines.config import RepoConfig
from service import create_app
from service.state import loopline
from tests.conftest import make_settings

LIMIT = 64 * 1024
ENDPOINTS = ["/hooks/git", "/hooks/github", "/api/runs/1/approve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def werkzeug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("werkzeug")
    repos = (
        RepoConfig(name="churn", provider="git", match="churn", url="/x"),
        RepoConfig(name="hello", provider="github", match="a/b", url="/x"),
    )
    app = create_app({"settings": make_settings(tmp, repos, max_body_bytes=LIMIT, api_token="t")})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(5)
    with app.app_context():
        loopline().db.dispose()


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    config = tmp / "loopline.yaml"
    config.write_text(
        "repositories:\n"
        "  - {name: churn, provider: git, match: churn, url: /x}\n"
        "  - {name: hello, provider: github, match: a/b, url: /x}\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(tmp / "home"),
        "LOOPLINE_CONFIG": str(config),
        "LOOPLINE_MAX_BODY_BYTES": str(LIMIT),
        "LOOPLINE_API_TOKEN": "t",
    }
    argv = [sys.executable, "-m", "loopline", "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def exchange(port: int, path: str, *, chunked: bool) -> tuple[int, dict[str, str]]:
    """POST a body over the limit, stopping before its end; return the answer.

    With ``Content-Length`` (ten times the limit) not one body byte is sent; chunked, the
    limit plus one chunk is sent and the terminating chunk never is.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: loopline\r\nContent-Type: text/plain\r\n"
        if chunked:
            sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"x" * 8192
            for _ in range(LIMIT // len(chunk) + 1):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            sock.sendall(f"{head}Content-Length: {LIMIT * 10}\r\n\r\n".encode())
        answer = sock.makefile("rb")
        status = int(answer.readline().split()[1])
        length = 0
        while (line := answer.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(answer.read(length))


@pytest.mark.parametrize("server", ["werkzeug_server", "gunicorn_server"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_over_limit_body_is_413_json(
    request: pytest.FixtureRequest, server: str, chunked: bool, path: str
) -> None:
    port = request.getfixturevalue(server)
    status, body = exchange(port, path, chunked=chunked)
    assert status == 413
    assert body == {
        "error": "request_entity_too_large",
        "message": f"the body is over the limit of {LIMIT} bytes",
    }


@pytest.mark.parametrize("server", ["werkzeug_server", "gunicorn_server"])
def test_chunked_body_within_the_limit_is_read(request: pytest.FixtureRequest, server: str) -> None:
    port = request.getfixturevalue(server)
    body = json.dumps(
        {"repository": "churn", "ref": "refs/heads/main", "before": "a" * 40, "after": "b" * 40}
    )
    answer = requests.post(
        f"http://127.0.0.1:{port}/hooks/git", data=iter([body[:20].encode(), body[20:].encode()]), timeout=10
    )
    assert answer.status_code == 202 and answer.json()["status"] == "accepted"


@pytest.mark.parametrize("server", ["werkzeug_server", "gunicorn_server"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_limit_itself_is_allowed_one_byte_more_is_not(
    request: pytest.FixtureRequest, server: str, chunked: bool
) -> None:
    url = f"http://127.0.0.1:{request.getfixturevalue(server)}/hooks/git"
    for size, status in ((LIMIT, 400), (LIMIT + 1, 413)):  # 400: the bytes are not JSON
        data = b"x" * size
        answer = requests.post(url, data=iter([data[:1000], data[1000:]]) if chunked else data, timeout=10)
        assert answer.status_code == status, size
