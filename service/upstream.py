"""The gateway's connections to releases: urllib3 connection pools, one per release address.

The pools are shared by a worker's threads and keep connections alive between requests; urllib3
(on ``http.client``) writes the requests and parses the answers, so no hand-written HTTP parser
sits between clients and releases (a request-smuggling surface), and an answer is read whole:
``Content-Length``, chunked, or until the release closes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.client import RemoteDisconnected

from urllib3 import HTTPConnectionPool
from urllib3.exceptions import HTTPError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util import SKIP_HEADER

#: Connections kept per release address and worker process (more are opened when busier, then closed).
KEPT = 16
#: What the exchange with a release raises when it does not answer properly.
UpstreamError = (OSError, HTTPError)


@dataclass(slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class Upstream:
    """Kept-alive connections to every release this worker has sent a request to."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, int], HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def exchange(
        self,
        host: str,
        port: int,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Answer:
        """Send one request and read the whole answer, undecoded (the client gets the bytes the
        release sent). A kept connection the release closed meanwhile (restarted, or an idle
        timeout) fails without an answer: the request goes once more, on a fresh connection."""
        pool = self._pools.get((host, port)) or self._pool(host, port)
        headers.setdefault("User-Agent", SKIP_HEADER)  # the client's, or none: not urllib3's
        try:
            answer = self._send(pool, method, path, headers, body, timeout)
        except ProtocolError as exc:
            if not isinstance(exc.__context__ or exc.args[-1], RemoteDisconnected | ConnectionResetError):
                raise
            answer = self._send(pool, method, path, headers, body, timeout)
        try:
            if answer.status < 200:  # http.client reads past 100 Continue only: the real answer
                # would be left on the connection for the next request, so the connection goes.
                raise ProtocolError(f"informational answer {answer.status} is not passed on")
            return Answer(answer.status, answer.reason or "", list(answer.headers.items()), answer.read())
        except BaseException:
            answer.close()  # closes the connection too: nothing of this answer is left to misread
            raise
        finally:
            answer.release_conn()

    @staticmethod
    def _send(
        pool: HTTPConnectionPool,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: float,
    ) -> BaseHTTPResponse:
        return pool.urlopen(
            method,
            path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=timeout,
            preload_content=False,
            decode_content=False,
        )

    def _pool(self, host: str, port: int) -> HTTPConnectionPool:
        with self._lock:
            pool = self._pools.get((host, port))
            if pool is None:
                pool = self._pools[(host, port)] = HTTPConnectionPool(host, port, maxsize=KEPT, block=False)
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
