"""A lean HTTP/1.1 client for the gateway's exchange with a release.

``http.client`` costs about as much CPU as everything else the gateway does: it builds the
request in several writes and parses the answer's headers with the ``email`` package. A
release is a local process answering small JSON bodies, so this client writes the request in
one ``sendall`` and reads the answer with a buffered reader: the status line, header lines
split once on ``:``, then a ``Content-Length`` body, a chunked body, or (``Connection:
close`` without a length) everything until the release closes.

Measured against urllib3 connection pools (commit 9baa61b, ``bench/gateway.py``, same session,
2 gthread workers): urllib3 adds 0.37-0.41 ms of server CPU per proxied request (1.59-1.61 ms
against 1.19-1.22 ms), ten times the 0.1 ms budget, and http.client, under it, neither skips a
``103`` answer (it would be left on the connection for the next request; urllib3 needs that
connection closed) nor refuses a bad ``Content-Length`` or ``Transfer-Encoding`` (it waits for
the timeout instead). This parser is strict instead: one length or chunked, nothing else, a
bounded line length and header count; ``tests/test_upstream.py`` scripts hostile answers.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from io import BufferedReader

#: Longest status or header line, and most header lines, accepted from a release.
MAX_LINE = 65536
MAX_HEADERS = 100
_NO_BODY = frozenset((204, 304))


class ProtocolError(OSError):
    """The release answered something that is not HTTP/1.x."""


class Closed(ConnectionResetError):
    """The release closed the connection before a byte of the answer (a stale kept connection)."""


@dataclass(slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool


class Connection:
    """One connection to a release, kept open between exchanges while the release allows."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # The request goes out in one write, but the release's answer may come in several:
        # Nagle would hold ours back until theirs is acknowledged.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def exchange(self, request: bytes, *, head: bool = False) -> Answer:
        """Send ``request`` (the whole message, body included) and read the full answer;
        ``head`` says that the request was a HEAD (the answer has no body)."""
        self.sock.sendall(request)
        return read_answer(self.reader, head=head)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def read_answer(reader: BufferedReader, *, head: bool = False) -> Answer:
    """Read one HTTP/1.x answer (skipping informational ``1xx`` ones)."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise Closed("the release closed the connection without answering")
    while True:
        version, status, reason = _status_line(line)
        headers, length, chunked, close = _headers(reader)
        if status >= 200:
            break
        line = _line(reader)
    keep_alive = version == b"HTTP/1.1" and not close
    if head or status in _NO_BODY:
        body = b""
    elif chunked:
        body = _chunked(reader)
    elif length is not None:
        body = reader.read(length)
        if len(body) < length:
            raise ProtocolError(f"the release closed the connection {length - len(body)} bytes short")
    else:  # no length: the body ends when the release closes the connection
        body, keep_alive = reader.read(), False
    return Answer(status, reason, headers, body, keep_alive)


def _line(reader: BufferedReader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise ProtocolError("the release's answer ended early" if len(line) <= MAX_LINE else "line too long")
    return line


def _status_line(line: bytes) -> tuple[bytes, int, str]:
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or not (len(parts[1]) == 3 and parts[1].isdigit())
    ):
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:100]!r}")
    return parts[0], int(parts[1]), parts[2].decode("latin-1") if len(parts) == 3 else ""


def _headers(reader: BufferedReader) -> tuple[list[tuple[str, str]], int | None, bool, bool]:
    """The header lines up to the blank one, and what they say about the body and connection."""
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = close = False
    while True:
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers, length, chunked, close
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} header lines")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:100]!r}")
        value = value.strip()
        headers.append((name, value))
        key = name.lower()
        if key == "content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif key == "transfer-encoding":
            if value.lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding: {value[:40]!r}")
            chunked = True
        elif key == "connection":
            close = "close" in value.lower()


def _chunked(reader: BufferedReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size: {size_line[:40]!r}") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n"):  # trailers: not passed on
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size or _line(reader) not in (b"\r\n", b"\n"):
            raise ProtocolError("the release's chunked body ended early")
        parts.append(chunk)
