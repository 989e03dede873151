"""Connections are bounded in bytes and time: the real server process, over raw sockets.

Each test is a way one client held a connection (and its memory) for as long as it liked on uvicorn alone, or lost
its answer: headers of any size, an answer sent before the body was read (the rest of the body then cancelled
the keep-alive timer for good, or, with ``Connection: close``, the close reset the upload and the answer with it),
an answer the client never reads, trailers of any size. Plus the paths as sent: ``%2F`` is not a separator.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apptools import ServerProcess, free_port, publish, running_server
from rawhttp import exchange, get, post, read_response, read_until_closed
from service.repository.local import LocalRepository

MAX_HEADER_BYTES = 8192
MAX_BODY = 8 * 1024 * 1024
SEND_TIMEOUT_S = 2.0
LINGER_S = 3.0
HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 5.0
MARGIN_S = 5.0  # for a loaded machine: every wait is bounded by the setting plus this

LIVE = b"/v2/health/live"
PREDICT = b"/v1/models/iris:predict"
CLOSE = b"Connection: close\r\n"
ROW = b"[5.1, 3.5, 1.4, 0.2]"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("connections")
    publish(LocalRepository(folder / "repo"), "iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(folder / "repo"),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_MAX_BODY_BYTES": str(MAX_BODY),
        "RTSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "RTSERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "RTSERVE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "RTSERVE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "RTSERVE_LINGER_TIMEOUT_S": str(LINGER_S),
        "RTSERVE_LOG_REQUESTS": "false",
    }
    with running_server(env, folder) as process:
        yield process


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN_S)


def assert_431(received: bytes, closed: bool) -> None:
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b"limit of %d bytes" % MAX_HEADER_BYTES in received
    assert closed, "the connection was kept after a 431"


# -- the request line and headers have a byte limit ------------------------------------------------------------

OVERSIZED = {
    "long request line": get(LIVE + b"?" + b"a" * (2 * MAX_HEADER_BYTES)),
    "many small headers": get(LIVE, b"X-A: b\r\n" * (MAX_HEADER_BYTES // 8 + 10)),
    "one huge header": get(LIVE, b"X-Big: " + b"a" * (100 * MAX_HEADER_BYTES) + b"\r\n"),
}


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_headers_over_the_limit_get_431_on_a_fresh_connection(server: ServerProcess, name: str) -> None:
    answer = exchange(server.port, OVERSIZED[name], limit_s=LINGER_S + MARGIN_S)
    assert answer.status == 431, answer.head
    assert "limit" in json.loads(answer.body)["error"]
    assert answer.closed


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_headers_over_the_limit_get_431_on_a_kept_alive_connection(server: ServerProcess, name: str) -> None:
    with connect(server) as sock:
        sock.sendall(get(LIVE))
        assert read_response(sock).status == 200
        sock.sendall(OVERSIZED[name])
        assert_431(*read_until_closed(sock, LINGER_S + MARGIN_S))


def test_headers_under_the_limit_are_served(server: ServerProcess) -> None:
    answer = exchange(server.port, get(LIVE, CLOSE + b"X-Big: " + b"a" * (MAX_HEADER_BYTES - 500) + b"\r\n"))
    assert answer.status == 200


def test_headers_streamed_without_end_are_cut_off_at_the_limit(server: ServerProcess) -> None:
    """Before: the server buffered all it got until the header deadline (gigabytes at loopback speed)."""
    piece, cap = b"a" * 65536, 64 * 1024 * 1024
    sent, received = 0, b""
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: rtserve\r\nX-Big: ")
        while sent < cap and not received:
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                received = sock.recv(65536)
        rest, closed = read_until_closed(sock, LINGER_S + MARGIN_S)
    assert sent < cap, "the server took 64 MB of one header"
    assert_431(received + rest, closed)


def test_trailers_over_the_limit_get_431(server: ServerProcess) -> None:
    body = b'{"instances": [' + ROW + b"]}"
    trailer = b"X-Trailer: " + b"a" * (4 * MAX_HEADER_BYTES) + b"\r\n"
    request = post(PREDICT, b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n" % (len(body), body), False)
    answer = exchange(server.port, request + trailer + b"\r\n", limit_s=LINGER_S + MARGIN_S)
    assert answer.status == 431, answer.head
    assert answer.closed


def test_pipelined_requests_are_all_answered(server: ServerProcess) -> None:
    """Requests in one piece of data, more bytes in all than the header limit: none is mistaken for headers over
    the limit."""
    request = get(LIVE, b"X-Padding: " + b"a" * 1000 + b"\r\n")
    count = 3 * MAX_HEADER_BYTES // len(request)
    answer = exchange(server.port, request * count + get(LIVE, CLOSE))
    assert answer.closed
    assert (answer.head + b"\r\n\r\n" + answer.body).count(b"HTTP/1.1 200 ") == count + 1


def test_a_deep_pipeline_is_answered_in_part_then_closed(server: ServerProcess) -> None:
    """Before: every request queued (thousands from one read), and each answer read more."""
    sent = 5000
    answer = exchange(server.port, get(LIVE) * sent, limit_s=LINGER_S + MARGIN_S)
    received = answer.head + b"\r\n\r\n" + answer.body
    answered = received.count(b"HTTP/1.1 200 ")
    assert 0 < answered < sent // 10  # the queue's bound (service.api.rest.protocol.MAX_PIPELINED) is 32
    assert received.lower().count(b"connection: close") == 1
    assert answer.closed


# -- an answer sent before the body was read closes the connection, after the client got it ----------------------


def test_an_answer_before_the_body_closes_the_connection(server: ServerProcess) -> None:
    """Before: the 413 kept the connection, and one stray byte of the unread body cancelled the keep-alive
    timer for good: the connection stayed open for ever."""
    with connect(server) as sock:
        sock.sendall(post(PREDICT, b"Content-Length: %d\r\n" % (MAX_BODY + 1), b"{" * 100, False))
        answer = read_response(sock)
        assert answer.status == 413
        sock.sendall(b"x")
        _, closed = read_until_closed(sock, LINGER_S + MARGIN_S)
    assert closed, "the connection outlived the answer to a request whose body it never read"
    assert b"connection: close" in answer.head.lower(), "the answer did not say the connection closes"


@pytest.mark.parametrize("close", [True, False], ids=["Connection: close", "keep-alive"])
def test_an_early_413_reaches_a_client_that_goes_on_uploading(server: ServerProcess, close: bool) -> None:
    """Before, with Connection: close: the server closed with the upload unread, and the client's next bytes
    drew a reset that destroyed the 413 (or the upload failed with a broken pipe)."""
    body = b" " * (4 * MAX_BODY)
    with connect(server) as sock:
        length = b"Content-Length: %d\r\n" % len(body)
        sock.sendall(post(PREDICT, (CLOSE if close else b"") + length, b"", False))
        time.sleep(0.2)  # the server answers before the upload starts, as it does for a slow client
        try:
            sock.sendall(body)
        except OSError as error:
            pytest.fail(f"the upload was reset: {error!r}")
        received, closed = read_until_closed(sock, LINGER_S + MARGIN_S)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"limit" in received
    assert closed


# -- a client that never reads its answer is cut off ------------------------------------------------------------


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "Connection: close"])
def test_a_client_that_never_reads_its_answer_is_cut_off(server: ServerProcess, close: bool) -> None:
    """Before: the answer (7.8 MB here) sat in the write buffer for as long as the client kept the
    connection (with Connection: close too: the close waited for the buffer to empty)."""
    rows = 200_000
    body = b'{"instances": [' + b", ".join([ROW] * rows) + b"]}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little of the answer
        sock.settimeout(MARGIN_S)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(post(PREDICT, (CLOSE if close else b"") + b"Content-Type: application/json\r\n", body))
        time.sleep(SEND_TIMEOUT_S + MARGIN_S)  # the answer is ready well within this, then stalls
        received, closed = read_until_closed(sock, MARGIN_S)
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:200]
    length = int(next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
    assert length > 5 * 1024 * 1024
    assert closed
    assert len(answer) < length, "the whole answer was kept for a client that did not read it"


# -- paths as sent: %2F is part of a segment, never a separator -------------------------------------------------

ENCODED_SLASH = {
    "TF Serving status": get(b"/v1/models/iris%2Fversions%2F1", CLOSE),
    "TF Serving metadata, lower case": get(b"/v1/models/iris%2fversions%2f1/metadata", CLOSE),
    "TF Serving predict": post(b"/v1/models/iris%2Fversions%2F1:predict", CLOSE, b'{"instances": [' + ROW + b"]}"),
    "V2 model metadata": get(b"/v2/models/iris%2Fversions%2F1", CLOSE),
    "V2 infer": post(
        b"/v2/models/iris%2Fversions%2F1/infer",
        CLOSE,
        b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ' + ROW + b"}]}",
    ),
}


@pytest.mark.parametrize("name", list(ENCODED_SLASH))
def test_an_encoded_slash_is_not_a_path_separator(server: ServerProcess, name: str) -> None:
    """Before: uvicorn decoded %2F and these routed to version 1 of iris, as if the path had named it. Now the
    name is 'iris%2Fversions%2F1' as sent, and no model has it."""
    answer = exchange(server.port, ENCODED_SLASH[name])
    assert answer.status == 404, answer.head
    assert "iris%2Fversions%2F1" in json.loads(answer.body)["error"].replace("%2f", "%2F")


def test_the_same_paths_unencoded_are_served(server: ServerProcess) -> None:
    assert exchange(server.port, get(b"/v1/models/iris/versions/1", CLOSE)).status == 200
    assert exchange(server.port, get(b"/v1/models/iris", CLOSE)).status == 200


# -- a drain below one second is a short drain, not an unlimited one ----------------------------------------------


def test_a_drain_timeout_below_one_second_bounds_the_drain(tmp_path: Path, demo_model_dir: Path) -> None:
    """Before: RTSERVE_DRAIN_TIMEOUT_S=0.5 became no limit at all, and the server waited for a request whose body
    never came until the body deadline (60 s here)."""
    publish(LocalRepository(tmp_path / "repo"), "iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_DRAIN_TIMEOUT_S": "0.5",
        "RTSERVE_BODY_TIMEOUT_S": "60",
    }
    # Not running_server: the stop is what this test times (and uvicorn logs the traceback of the request it
    # cancels at the end of the drain).
    process = ServerProcess(env, free_port(), tmp_path / "server.log")
    try:
        process.wait_ready()
        with connect(process) as sock:
            sock.sendall(post(PREDICT, b"Content-Length: 1000\r\n", b"{", False))  # its body never ends
            time.sleep(0.5)
            started = time.monotonic()
            exit_code = process.terminate(timeout_s=30)
            assert time.monotonic() - started < 10, "the drain waited for the request"
            assert exit_code == 0
    finally:
        process.kill()
