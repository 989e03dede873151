"""A transport that hands its close() to the protocol, so that the protocol decides how a connection ends.

uvicorn closes connections from many places (after a ``Connection: close`` answer, a parse error, the keep-alive
timeout, shutdown), each by calling ``transport.close()``. The bounded protocol (service/api/rest/protocol.py) gives
uvicorn this wrapper instead of the real transport, so every one of those closes can linger when an upload is
still arriving. Everything else goes straight to the real transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any


class ClosingTransport(asyncio.Transport):
    def __init__(self, real: asyncio.Transport, close: Callable[[], None]) -> None:
        super().__init__()
        self.real = real
        self._close = close
        self.closing = False  # set by the protocol once it has begun to close (a lingering close included)

    def close(self) -> None:
        self._close()

    def is_closing(self) -> bool:
        return self.closing or self.real.is_closing()

    def abort(self) -> None:
        self.closing = True
        self.real.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.real.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.real.writelines(list_of_data)

    def write_eof(self) -> None:
        self.real.write_eof()

    def can_write_eof(self) -> bool:
        return self.real.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self.real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.real.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.real.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self.real.pause_reading()

    def resume_reading(self) -> None:
        self.real.resume_reading()

    def is_reading(self) -> bool:
        return self.real.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.real.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.real.get_protocol()
