"""The gateway's HTTP/1.1 client against a real loopback server scripted byte for byte.

A release can answer anything: these tests send requests through ``/serve/m/…`` to a TCP
server whose answers are written out here (kept-alive, ``Connection: close``, chunked,
informational, malformed, dropped, hung), and check what the client of the gateway gets.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.gateway import Gateway
from store.models import Deployment, Run
from tests.conftest import make_settings

HANG = b"<hang>"  # an answer that never comes
DROP = b""  # the connection closes without an answer


def ok(body: bytes = b'{"predictions": [1]}', *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", "Content-Type: application/json", *extra]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


@dataclass
class Release:
    """A TCP server on loopback: each request gets ``answer(head, body)``'s bytes, verbatim;
    the connection stays open after an HTTP/1.1 answer unless it says ``Connection: close``."""

    answer: Callable[[bytes, bytes], bytes]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as reader:
            while True:
                head = b""
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head += line
                if not head:
                    return  # the gateway closed the connection
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = reader.read(length)
                self.requests.append((head, body))
                answer = self.answer(head, body)
                if answer == HANG:
                    self.stopped.wait(30)
                    return
                if answer == DROP:
                    return
                sock.sendall(answer)
                if answer.startswith(b"HTTP/1.0") or b"connection: close" in answer.lower():
                    return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@dataclass
class Gw:
    app: Flask
    client: FlaskClient
    release_id: int

    def gateway(self) -> Gateway:
        gw: Gateway = self.app.extensions["gateway"]
        return gw

    def with_release(self, answer: Callable[[bytes, bytes], bytes]) -> Release:
        release = Release(answer)
        with self.app.extensions["loopline"].db.session() as s:
            dep = s.get(Deployment, self.release_id)
            assert dep is not None
            dep.url = f"http://127.0.0.1:{release.port}"
        self.gateway()._routes.clear()
        return release


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    app = create_app({"settings": make_settings(tmp_path, max_body_bytes=1000), "TESTING": True})
    with app.extensions["loopline"].db.session() as s:
        run = Run(repository="r", trigger="push", status="succeeded", dedupe_key="r", model_version=1)
        s.add(run)
        s.flush()
        dep = Deployment(
            model_name="m",
            version=1,
            run_id=run.id,
            target="local",
            url="",
            status="active",
            traffic_percent=100,
        )
        s.add(dep)
        s.flush()
        dep_id = dep.id
    app.extensions["gateway"].timeout = 5.0  # a test that goes wrong fails rather than waits 20 s
    try:
        yield Gw(app, app.test_client(), dep_id)
    finally:
        app.extensions["gateway"].close()
        app.extensions["loopline"].db.dispose()


def test_keep_alive_passes_the_request_and_the_answer_on_over_one_connection(gw: Gw) -> None:
    release = gw.with_release(
        lambda head, body: ok(b'{"predictions": [1]}', "X-From-Release: yes", "Server: x")
    )
    for n in range(3):
        answer = gw.client.post(
            f"/serve/m/predict?n={n}&q=a%20b",
            data=b'{"instances": [[1]]}',
            headers={"Content-Type": "application/json", "X-Trace": "t1", "Connection": "keep-alive"},
        )
        assert answer.status_code == 200 and answer.json == {"predictions": [1]}
        assert answer.headers["X-From-Release"] == "yes" and "Server" not in answer.headers
        assert answer.headers["X-Loopline-Release"] == str(gw.release_id)
        assert answer.headers["X-Loopline-Model-Version"] == "1"
        assert answer.headers["Content-Length"] == str(len(answer.data))
    assert release.connections == 1  # kept alive
    head, body = release.requests[-1]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /predict?n=2&q=a%20b HTTP/1.1"
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
    assert headers["host"] == f"127.0.0.1:{release.port}"
    assert headers["x-trace"] == "t1" and headers["content-type"] == "application/json"
    assert headers["content-length"] == "20" and "connection" not in headers
    assert body == b'{"instances": [[1]]}'
    release.close()


def test_connection_close_and_an_answer_without_length_reconnect_each_time(gw: Gw) -> None:
    answers = iter(
        [
            ok(b"first", "Connection: close"),
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the release closes",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length either",
        ]
    )
    release = gw.with_release(lambda head, body: next(answers))
    assert [gw.client.get("/serve/m/x").data for _ in range(3)] == [
        b"first",
        b"read until the release closes",
        b"no length either",
    ]
    assert release.connections == 3
    release.close()


def test_chunked_answers_are_reassembled_and_sent_on_with_a_length(gw: Gw) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'5\r\n{"pre\r\n10;ext=1\r\ndictions": [0, 1\r\n2\r\n]}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    release = gw.with_release(lambda head, body: chunked)
    for _ in range(2):
        answer = gw.client.get("/serve/m/predict")
        assert answer.status_code == 200 and answer.json == {"predictions": [0, 1]}
        assert "Transfer-Encoding" not in answer.headers and answer.headers["Content-Length"] == "23"
    assert release.connections == 1
    gw.gateway().recorder.flush()
    telemetry = gw.client.get("/api/models/m/telemetry").json["releases"][0]["telemetry"]
    assert telemetry["requests"] == 2 and telemetry["predictions"] == {"0": 2, "1": 2}
    release.close()


def test_informational_answers_are_skipped_and_head_reads_no_body(gw: Gw) -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"  # the length a GET would have
        return b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"after hints")

    release = gw.with_release(answer)
    head = gw.client.head("/serve/m/predict")
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == "42"
    assert gw.client.get("/serve/m/predict").data == b"after hints"  # the same connection, in step
    assert release.connections == 1
    release.close()


def test_a_kept_connection_the_release_closed_is_replaced_once(gw: Gw) -> None:
    served: list[int] = []

    def answer(head: bytes, body: bytes) -> bytes:
        served.append(1)
        return ok() if len(served) != 2 else DROP  # the idle connection dies under the second request

    release = gw.with_release(answer)
    assert gw.client.post("/serve/m/predict", data=b"{}").status_code == 200
    assert gw.client.post("/serve/m/predict", data=b"{}").status_code == 200  # retried on a new connection
    assert release.connections == 2 and len(served) == 3
    release.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (DROP, "closed the connection"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc", "7 bytes short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Len", "ended early"),
        # Framing a release could mean one way and a lenient reader take another (smuggling):
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "both"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "more than one"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nok", "more than one"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "than one"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", "bad Content-Length"),  # a digit to str
        (b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 0\r\nContent-Length: 2\r\n\r\nok", "line folding"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\nok", "obsolete line folding"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", "bare LF"),
    ],
)
def test_a_release_that_drops_or_garbles_its_answer_is_a_502(gw: Gw, answer: bytes, reason: str) -> None:
    release = gw.with_release(lambda head, body: answer)
    got = gw.client.post("/serve/m/predict", data=b"{}")
    assert got.status_code == 502 and got.json["error"] == "bad_gateway"
    assert f"release #{gw.release_id} of m (v1) did not answer" in got.json["message"]
    assert reason in got.json["message"]
    gw.gateway().recorder.flush()
    telemetry = gw.client.get("/api/models/m/telemetry").json["releases"][0]["telemetry"]
    assert telemetry["requests"] == 1 and telemetry["errors"] == 1
    release.close()


def test_a_hung_release_is_a_502_after_the_timeout(gw: Gw) -> None:
    gw.gateway().timeout = 0.5
    release = gw.with_release(lambda head, body: HANG)
    started = time.monotonic()
    got = gw.client.post("/serve/m/predict", data=b"{}")
    waited = time.monotonic() - started
    assert got.status_code == 502 and "timed out" in got.json["message"]
    assert 0.5 <= waited < 10, waited  # bounded by the timeout, not retried
    assert len(release.requests) == 1
    release.close()


def test_hostile_requests_get_json_errors_and_reach_no_release(gw: Gw) -> None:
    release = gw.with_release(lambda head, body: ok())
    too_big = gw.client.post("/serve/m/predict", data=b"x" * 1001)
    assert too_big.status_code == 413 and too_big.json["error"] == "request_entity_too_large"
    chunked_too_big = gw.client.post(
        "/serve/m/predict", input_stream=io.BytesIO(b"x" * 1001), headers={"Transfer-Encoding": "chunked"}
    )
    assert chunked_too_big.status_code == 413
    odd = gw.client.open("/serve/m/predict", method="PROPFIND")
    assert odd.status_code == 405 and odd.json["error"] == "method_not_allowed"
    assert gw.client.get("/serve/m").json["error"] == "not_found"
    assert gw.client.get("/serve/").status_code == 404
    assert release.requests == []
    injected = gw.client.get("/serve/m/a%20b%0d%0aX-Injected:%201?q=%0d%0a")
    assert injected.status_code == 200
    assert release.requests[0][0].split(b"\r\n")[0] == b"GET /a%20b%0D%0AX-Injected:%201?q=%0d%0a HTTP/1.1"
    release.close()
