"""uvicorn's HTTP/1.1 protocol with a deadline for each request's headers.

uvicorn closes a kept-alive connection that stays idle between requests (``timeout_keep_alive``) but sets no
limit on the time before a connection's first request, nor on the time a client takes to send a request's
headers: a client that opens connections and sends nothing, or a header line every few seconds (slowloris),
holds them, and their file descriptors, for as long as it likes. This protocol closes a connection whose next
request's headers are not complete within ``timeout_s`` of the connection opening or of that request's first
byte. Bodies have their own deadline in the app (``RTSERVE_BODY_TIMEOUT_S``, answered with 408).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def with_header_deadline(timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class to hand to uvicorn.Config(http=...)."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            # Nothing of this request has reached the app yet: closing drops no work.
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
