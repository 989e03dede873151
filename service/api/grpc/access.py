"""The gRPC server's one interceptor: API keys, the message-size check, and one access-log line per call with its
request id echoed in the trailing metadata (``x-request-id``).

One interceptor rather than three: grpc.aio awaits every interceptor's ``intercept_service`` on every call, and
each wrapper adds a coroutine to it. Model calls are logged by their RpcObserver (with model and version); this
interceptor writes the line of every other call (model status, metadata, reload, ...) and of calls refused before
a servicer ran (a message too large). A call refused for its key is not logged, as REST does not log it; health
and reflection are not logged, as REST does not log its probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.api.errors import http_status
from service.api.grpc.auth import ApiKeyGate, protocol_of
from service.api.grpc.handlers import Continuation, Handler, HandlerCache, around_call, replaced, service_of
from service.api.grpc.limits import Oversize, refuse_oversize, size_guarded, sized
from service.api.grpc.observe import CURRENT_RPC, Context, RpcRecord, metadata_of
from service.errors import Code
from service.observability.logs import REQUEST_ID_HEADER
from service.observability.telemetry import Telemetry


class AccessLog(grpc.aio.ServerInterceptor):
    """Gives every call (but those of the ``quiet`` services) a request id and one log line; with ``limit``,
    refuses request messages larger than it; with ``gate``, refuses calls without an accepted key first."""

    def __init__(
        self,
        telemetry: Telemetry,
        quiet: frozenset[str],
        limit: int | None = None,
        gate: ApiKeyGate | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._quiet = quiet
        self._limit = limit
        self._gate = gate
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        if self._gate is not None and (refused := self._gate.refusing(details, handler)) is not None:
            return refused
        return self._handlers.get(details.method, handler)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        limit = self._limit
        if service_of(method) in self._quiet:
            return handler if limit is None else size_guarded(handler, limit)
        if limit is None:
            return self._logged(method, handler, None)
        if handler.request_streaming:  # each message checked as the servicer iterates: a wrapper of its own
            return self._logged(method, size_guarded(handler, limit), None)
        logged = self._logged(method, handler, limit)  # the size check inside the log line's coroutine
        return handler if logged is handler else replaced(logged, request_deserializer=sized(handler, limit))

    def _logged(self, method: str, handler: Handler, limit: int | None) -> Handler:
        """The handler with the call's line around it; ``limit``: the request (one message) is checked first."""
        protocol = protocol_of(service_of(method))
        ids, log = self._telemetry.ids, self._telemetry.log

        def around(behaviour: Callable[[Any, Context], Awaitable[Any]]) -> Callable[[Any, Context], Awaitable[Any]]:
            async def logged(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                metadata = metadata_of(context)
                record = RpcRecord(ids.of(metadata), method, metadata=metadata)
                token = CURRENT_RPC.set(record)
                context.set_trailing_metadata(((REQUEST_ID_HEADER, record.request_id),))
                name = "OK"
                try:
                    if limit is not None and isinstance(request, Oversize):
                        await refuse_oversize(context, request, limit)
                    return await behaviour(request, context)
                except asyncio.CancelledError:
                    name = "CANCELLED"
                    raise
                except BaseException:
                    name = "UNKNOWN"  # grpc answers an exception that is not an abort with UNKNOWN
                    raise
                finally:
                    CURRENT_RPC.reset(token)
                    code = context.code()
                    if isinstance(code, grpc.StatusCode) and name != "CANCELLED":
                        name = code.name
                    if not record.logged:
                        seconds = time.perf_counter() - started
                        status = http_status(Code[name])
                        log.emit(record.request_id, protocol, "", "", status, seconds, None, (method, name))

            return logged

        return around_call(handler, around)
