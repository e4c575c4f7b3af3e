"""A lean HTTP/1.1 client for the gateway's exchange with a release.

A release is a local process answering small JSON bodies, so this client writes the request in
one ``sendall`` and reads the answer with a buffered reader: the status line, header lines
split once on ``:``, then a ``Content-Length`` body, a chunked body, or (``Connection:
close`` without a length) everything until the release closes.

Why not a library: the budget is 0.1 ms of server CPU per proxied request over this client.
- urllib3 connection pools (commit 9baa61b, ``bench/gateway.py``, 2 gthread workers): +0.37 to
  +0.41 ms (1.59-1.61 ms against 1.19-1.22 ms).
- A kept-alive ``http.client.HTTPConnection`` per release per thread (``putrequest``/``putheader``/
  ``getresponse``), and h11 0.16 over the same socket, measured in one session on a loaded
  machine (5 interleaved rounds of 4000 requests each, gateway CPU less the release's own CPU
  in the same run, medians): this client -0.03 ms, http.client +0.09 ms (0.12 ms more than this
  client), h11 +0.13 ms (0.16 ms more). The client alone, 8 rounds of 3000 exchanges with a
  loopback server: this client 20 us of CPU each, http.client 93 us, h11 90 us (+0.07 ms both).
  And http.client does not skip a ``103`` answer (it returns it as final, leaving the real answer
  on the connection for the next request) and takes the first of two different
  ``Content-Length`` headers.
This parser is strict instead, so a release cannot make the gateway read its answer's framing
differently from how the release meant it (and desynchronize a kept connection): ``CRLF`` line
ends only, no obsolete line folding, one ``Content-Length`` of ASCII digits or ``chunked`` (never
both, never twice), hexadecimal chunk sizes only, a bounded line length and header count.
``tests/test_upstream.py`` scripts hostile answers. These checks cost 1.5 us of CPU per exchange
(17.7 against 16.2 us alone; with ``bench/gateway.py``, 4 interleaved rounds, no difference above
the noise: gateway less release CPU -0.02 ms strict, +0.01 ms before).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from io import BufferedReader

#: Longest status or header line, and most header lines, accepted from a release.
MAX_LINE = 65536
MAX_HEADERS = 100
_NO_BODY = frozenset((204, 304))
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


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
        version, status, reason = _status_line(_ended(line))
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
    return _ended(reader.readline(MAX_LINE + 1))


def _ended(line: bytes) -> bytes:
    """``line`` if it is whole and ends in CRLF."""
    if not line.endswith(b"\n"):
        raise ProtocolError("the release's answer ended early" if len(line) <= MAX_LINE else "line too long")
    if not line.endswith(b"\r\n"):
        raise ProtocolError(f"a line ends in a bare LF: {line[:100]!r}")
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
        if line == b"\r\n":
            if chunked and length is not None:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            return headers, length, chunked, close
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} header lines")
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError(f"obsolete line folding: {line[:100]!r}")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:100]!r}")
        value = value.strip()
        headers.append((name, value))
        key = name.lower()
        if key == "content-length":
            if length is not None:
                raise ProtocolError("more than one Content-Length")
            if not (value.isascii() and value.isdigit() and len(value) <= 18):  # "²".isdigit()
                raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif key == "transfer-encoding":
            if chunked:
                raise ProtocolError("more than one Transfer-Encoding")
            if value.lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding: {value[:40]!r}")
            chunked = True
        elif key == "connection":
            close = "close" in value.lower()


def _chunked(reader: BufferedReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader)[:-2].split(b";", 1)[0].rstrip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_line):  # int(…, 16) would take "-1", "0x1f" and "1_0"
            raise ProtocolError(f"bad chunk size: {size_line[:40]!r}")
        size = int(size_line, 16)
        if size == 0:
            while _line(reader) != b"\r\n":  # trailers: not passed on
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size or _line(reader) != b"\r\n":
            raise ProtocolError("the release's chunked body ended early")
        parts.append(chunk)
