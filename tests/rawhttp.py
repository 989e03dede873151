"""Raw HTTP/1.1 over sockets, for what no client library sends: malformed requests, stalls, unread answers."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

DEFAULT_LIMIT_S = 15.0


@dataclass(frozen=True)
class RawAnswer:
    status: int
    body: bytes
    closed: bool  # the server closed the connection after answering
    seconds: float
    head: bytes = b""  # the status line and headers, as sent


def parse_answer(received: bytes, closed: bool, seconds: float) -> RawAnswer:
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return RawAnswer(status, body, closed, seconds, head)


def read_until_closed(sock: socket.socket, limit_s: float, started: float | None = None) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True) or ``limit_s`` passes (False)."""
    started = time.monotonic() if started is None else started
    received = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def exchange(port: int, request: bytes, limit_s: float = DEFAULT_LIMIT_S) -> RawAnswer:
    """Send ``request`` and read until the server closes the connection or ``limit_s`` passes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as sock:
        sock.sendall(request)
        received, closed = read_until_closed(sock, limit_s, started)
    return parse_answer(received, closed, time.monotonic() - started)


def read_response(sock: socket.socket, limit_s: float = DEFAULT_LIMIT_S) -> RawAnswer:
    """One answer with a Content-Length, leaving the connection open (for kept-alive connections)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return parse_answer(received, True, time.monotonic() - started)
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return parse_answer(head + b"\r\n\r\n" + body, False, time.monotonic() - started)


def post(path: bytes, headers: bytes, body: bytes, content_length: bool = True) -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if content_length else b""
    return b"POST " + path + b" HTTP/1.1\r\nHost: rtserve\r\n" + headers + length + b"\r\n" + body


def get(path: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: rtserve\r\n" + headers + b"\r\n"


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
