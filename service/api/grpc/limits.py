"""The message-size limit of RTSERVE_MAX_BODY_BYTES, with a refusal that names it.

grpc's own limit is set higher (service/api/grpc/options.py); here each request message's size is read before it
is parsed: a larger one becomes a marker instead of a message, and the call is answered RESOURCE_EXHAUSTED with
a message naming the setting. The cost is one length check per message and one isinstance per call (0.3 us,
``python -m bench.grpc_loopback --micro``). Streamed requests are checked as the servicer iterates over them; a
servicer that reads with ``context.read()`` instead would get the marker: iterate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.api.grpc.handlers import Continuation, Handler, HandlerCache, around_call, replaced
from service.api.grpc.observe import Context

SETTING = "RTSERVE_MAX_BODY_BYTES"


class Oversize:
    """Stands for a request message that was too large to parse."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def too_large(size: int, limit: int) -> str:
    return f"the request message is {size} bytes, more than {SETTING} ({limit} bytes)"


def sized(handler: Handler, limit: int) -> Callable[[bytes], Any]:
    """The handler's request deserializer with the size check in front: a larger message becomes an Oversize."""
    parse = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        if len(data) > limit:
            return Oversize(len(data))
        return data if parse is None else parse(data)

    return deserialize


async def refuse_oversize(context: Context, request: Oversize, limit: int) -> None:
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large(request.size, limit))


def size_guarded(handler: Handler, limit: int) -> Handler:
    """The handler with its request messages' size checked: one refusal naming the setting for a larger one."""

    def around(behaviour: Callable[[Any, Context], Awaitable[Any]]) -> Callable[[Any, Context], Awaitable[Any]]:
        if handler.request_streaming:

            async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Oversize):
                        await refuse_oversize(context, request, limit)
                    yield request

            async def streaming(requests: AsyncIterator[Any], context: Context) -> Any:
                return await behaviour(checked(requests, context), context)

            return streaming

        async def unary(request: Any, context: Context) -> Any:
            if isinstance(request, Oversize):
                await refuse_oversize(context, request, limit)
            return await behaviour(request, context)

        return unary

    wrapped = around_call(handler, around)
    if wrapped is handler:  # a sync behaviour: left to grpc's own limit
        return handler
    return replaced(wrapped, request_deserializer=sized(handler, limit))


class MessageSizeGuard(grpc.aio.ServerInterceptor):
    """Refuses request messages larger than ``limit`` bytes, naming the setting (the server runs this check
    inside its one interceptor, service/api/grpc/access.py; this one alone is for measuring it)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._handlers = HandlerCache(lambda _method, handler: size_guarded(handler, limit))

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        return None if handler is None else self._handlers.get(details.method, handler)
