"""uvicorn's HTTP/1.1 protocol (httptools) with every connection bounded in bytes and in time.

uvicorn alone leaves these open, each a way for one client to hold a connection, its memory or both for as long
as it likes (uvicorn 0.54; the tests in tests/integration/test_connections.py pin each one):

* Time to the headers. Only an idle kept-alive connection is closed (``timeout_keep_alive``); a connection that
  sends nothing, or a header line every few seconds (slowloris), is held. Here a request's headers must be complete
  within ``header_timeout_s`` of the connection opening or of that request's first byte, else the connection closes.
* Bytes of the headers. httptools buffers a request line and headers of any length (one huge header value is even
  copied again for every piece that arrives). Here more than ``max_header_bytes`` of them is answered 431 and the
  connection closed. The same budget bounds what a chunked body carries besides its data (trailers, chunk
  extensions), which httptools buffers the same way.
* Time to send. A client that does not read its answer leaves it in the write buffer for good, and a close waits
  for that buffer to empty. Here writing that makes no progress for ``send_timeout_s`` drops the connection.
* An answer sent before its request's body was read (413, 401, 408, ...). uvicorn keeps the connection and
  silently parses the rest of the body, and every byte of it cancels the keep-alive timer, so a client that sends
  one byte now and then holds it for good; with ``Connection: close`` it closes with the upload unread, and the
  kernel answers the client's next bytes with a reset that can destroy the answer before the client reads it.
  Here such a connection is always closed, lingering as nginx does: the answer says ``Connection: close``, the
  sending side is shut, and the rest of the upload is read and dropped for up to ``linger_s`` before the close.

* Pipelining. uvicorn queues every request a read brings and reads again after each answer, so a client that
  pipelines small requests without pause grows the queue without end. Here a connection with ``MAX_PIPELINED``
  requests queued answers them, the last with ``Connection: close``, and closes; the rest are never parsed (the
  client may send them again, as HTTP/1.1 allows for unanswered pipelined requests).

Bodies have their own deadline and size limit in the app (``RTSERVE_BODY_TIMEOUT_S``, ``RTSERVE_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.api.rest.transport import ClosingTransport
from service.codecs.json_io import error_body

# What a chunk of a chunked body costs besides its data: the size line and the line ends around the data.
CHUNK_FRAMING_BYTES = 32
# Requests queued behind the one being answered on a connection. uvicorn parses every request a read brings
# (thousands in 256 KiB of small GETs), each with its scope and task state, and reads again after every answer;
# past this many the connection answers what it queued, says Connection: close, and closes.
MAX_PIPELINED = 32


def never_draining() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float  # headers complete within this of the connection opening or the request's first byte
    max_header_bytes: int  # request line and headers (and a chunked body's trailers and extensions)
    send_timeout_s: float  # longest time writing may stall before the connection is dropped
    linger_s: float  # after an early answer, how long the rest of the upload is read and dropped; 0: close at once
    # True from SIGTERM on: every answer then says Connection: close, so that by the time the drain closes idle
    # connections no client still holds one it may send on (a request sent as the server closes it is lost).
    draining: Callable[[], bool] = never_draining


# How long the drain waits for the first request of a connection accepted just before it (loopback and LAN
# deliver a request sent with the connection in well under this).
FIRST_REQUEST_GRACE_S = 0.5


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


def headers_too_large(limit: int) -> bytes:
    """The 431 answer, whole, in the error shape of both REST protocols."""
    body = error_body(f"the request line and headers exceed the limit of {limit} bytes")
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    )
    return head + body


def bounded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to hand to uvicorn.Config(http=...)."""

    class BoundedProtocol(HttpToolsProtocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._real: asyncio.Transport | None = None
            self._closing_transport: ClosingTransport | None = None
            self._deadline: asyncio.TimerHandle | None = None  # the header deadline
            self._stall: asyncio.TimerHandle | None = None  # the send timeout, while writing is stalled
            self._linger: asyncio.TimerHandle | None = None
            self._lingering = False
            self._lost = False
            self._refused = False
            self._pipeline_full = False
            self._shutting_down = False
            self._fresh = True  # accepted, and nothing received on it yet
            self._first_request: asyncio.TimerHandle | None = None  # the wait for it, when the drain began first
            self._keep_alive = True  # what the request being received asked for
            # The message being parsed: begun and not complete; still in its headers.
            self._open = False
            self._in_headers = True
            # Transitions, so that data_received knows whether all of a piece of data fell in one phase.
            self._transitions = 0
            self._header_bytes = 0  # of the headers being received
            self._framing_bytes = 0  # of the body being received, beyond its data
            self._body_bytes = 0  # body data in the piece being parsed
            self._chunks = 0
            self._header_count = 0

        # -- the transport ----------------------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._real = transport
            self._closing_transport = ClosingTransport(transport, self._close)
            super().connection_made(self._closing_transport)
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._lost = True
            for timer in (self._deadline, self._stall, self._linger, self._first_request):
                if timer is not None:
                    timer.cancel()
            self._deadline = self._stall = self._linger = self._first_request = None
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall is None and not self._lost:
                self._stall = self.loop.call_later(limits.send_timeout_s, self._drop)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def handle_websocket_upgrade(self) -> None:
            # From here on the connection is the WebSocket protocol's, on the plain transport.
            self._disarm_deadline()
            assert self._real is not None
            self.transport = self._real
            super().handle_websocket_upgrade()

        # -- parsing ----------------------------------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            self._fresh = False
            if self._lingering:
                return  # the rest of a refused upload: dropped, the linger timer bounds it
            in_headers, transitions = self._in_headers, self._transitions
            self._body_bytes = 0
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                if self._pipeline_full:
                    self.flow.pause_reading()  # what follows is never parsed: the connection ends after the queue
                elif self._refused:
                    self._refuse_headers()
                else:
                    self.logger.warning("Invalid HTTP request received.")
                    self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            if transitions != self._transitions or in_headers != self._in_headers:
                return  # headers completed inside this piece: on_headers_complete measured them exactly
            if in_headers:
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse_headers()
            else:
                self._framing_bytes += len(data) - self._body_bytes
                if self._framing_bytes > limits.max_header_bytes + CHUNK_FRAMING_BYTES * self._chunks:
                    self._refuse_headers()  # trailers or chunk extensions past the budget

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._open = True
            self._arm_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_deadline()
            self._in_headers = False
            self._transitions += 1
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            self._header_bytes = self._framing_bytes = self._chunks = 0
            self._header_count = len(self.headers)
            if size > limits.max_header_bytes:
                self._refused = True
                raise _Refused
            if len(self.pipeline) >= MAX_PIPELINED:
                self._pipeline_full = True
                self.cycle.keep_alive = False  # the last request queued closes the connection once answered
                raise _Refused
            super().on_headers_complete()
            if self.cycle is not None:
                # Until its body is in, an answer to this request closes the connection (and says so); a body
                # that arrives in full first, as every small one does, gives the request back its keep-alive.
                self._keep_alive = self.cycle.keep_alive
                self.cycle.keep_alive = False

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_chunk_header(self) -> None:
            self._chunks += 1

        def on_message_complete(self) -> None:
            # Trailers (httptools adds them to the headers) that arrived with the rest of the body in one piece.
            trailers = self.headers[self._header_count :] if self.headers is not None else []
            if sum(len(name) + len(value) + 4 for name, value in trailers) > limits.max_header_bytes:
                self._refused = True
                raise _Refused
            self._open = False
            self._in_headers = True
            self._transitions += 1
            self._header_bytes = 0
            cycle = self.cycle
            if cycle is not None and not cycle.response_started and not self._shutting_down:
                cycle.keep_alive = self._keep_alive and not limits.draining()
            super().on_message_complete()

        def shutdown(self) -> None:
            # uvicorn's, but an idle connection or one halfway through its headers closes at once, not lingering.
            self._shutting_down = True
            if self.cycle is None and self._fresh and not self._lost:
                # Just accepted: its first request may be on the wire already (a client that opened a new
                # connection after a Connection: close answer). Closing now would cut it; it gets a moment to
                # arrive, and is answered with Connection: close.
                self._first_request = self.loop.call_later(FIRST_REQUEST_GRACE_S, self._close_if_still_fresh)
                return
            if self.cycle is None or self.cycle.response_complete:
                self._close_at_once()
            else:
                self.cycle.keep_alive = False

        def _close_if_still_fresh(self) -> None:
            self._first_request = None
            if self._fresh:
                self._close_at_once()

        # -- closing ----------------------------------------------------------------------------------------

        def _close(self) -> None:
            """Every close of uvicorn's (after a Connection: close answer, a 400, the keep-alive timeout,
            shutdown) comes here: a request still arriving gets a lingering close."""
            if self._open and not self._lost:
                self._start_lingering()
            else:
                self._close_at_once()

        def _refuse_headers(self) -> None:
            if self._lingering or self._lost:
                return
            assert self._real is not None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if cycle.response_started or self.pipeline:
                    self._close_at_once()  # an answer is being written: no room for a 431
                    return
                # The app is reading this request's body (its trailers ran over): it sees a disconnect, and
                # whatever it sends is dropped, so the 431 is the only answer.
                cycle.disconnected = True
                cycle.message_event.set()
            self._real.write(headers_too_large(limits.max_header_bytes))
            self._start_lingering()

        def _start_lingering(self) -> None:
            if self._lingering or self._lost:
                return
            assert self._real is not None and self._closing_transport is not None
            self._lingering = True
            self._closing_transport.closing = True  # uvicorn sees a closing transport and starts nothing new
            self._disarm_deadline()
            self._unset_keepalive_if_required()
            if limits.linger_s <= 0 or not self._real.can_write_eof():
                self._close_at_once()
                return
            self._real.write_eof()  # the answer, then FIN; reading goes on
            self.flow.resume_reading()
            self._linger = self.loop.call_later(limits.linger_s, self._close_at_once)

        def _close_at_once(self) -> None:
            assert self._real is not None and self._closing_transport is not None
            self._closing_transport.closing = True
            self._disarm_deadline()
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            if not self._real.is_closing():
                self._real.close()
            # A close waits for the write buffer to empty: bound that wait like any other write.
            if self._real.get_write_buffer_size() > 0 and self._stall is None and not self._lost:
                self._stall = self.loop.call_later(limits.send_timeout_s, self._drop)

        def _drop(self) -> None:
            self._stall = None
            assert self._real is not None
            self._real.abort()

        # -- the header deadline ----------------------------------------------------------------------------

        def _arm_deadline(self) -> None:
            if self._deadline is None and not self._lingering:
                self._deadline = self.loop.call_later(limits.header_timeout_s, self._expire)

        def _disarm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            # Nothing of this request has reached the app yet: closing drops no work.
            self._deadline = None
            self._close_at_once()

    return BoundedProtocol
