"""One access-log line per gRPC call, and its request id echoed in the trailing metadata (``x-request-id``).

Model calls are logged by their RpcObserver (with model and version); this interceptor writes the line of every
other call (model status, metadata, reload, ...) and of calls refused before a servicer ran (a message too
large). Health and reflection are not logged, as REST does not log its probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.api.errors import http_status
from service.api.grpc.auth import protocol_of
from service.api.grpc.handlers import Continuation, Handler, HandlerCache, around_call, service_of
from service.api.grpc.observe import CURRENT_RPC, Context, RpcRecord, metadata_of
from service.errors import Code
from service.observability.logs import REQUEST_ID_HEADER
from service.observability.telemetry import Telemetry


class AccessLog(grpc.aio.ServerInterceptor):
    """Gives every call (but those of the ``quiet`` services) a request id and one log line."""

    def __init__(self, telemetry: Telemetry, quiet: frozenset[str]) -> None:
        self._telemetry = telemetry
        self._quiet = quiet
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None or service_of(details.method) in self._quiet:
            return handler
        return self._handlers.get(details.method, handler)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        protocol = protocol_of(service_of(method))
        ids, log = self._telemetry.ids, self._telemetry.log

        def around(behaviour: Callable[[Any, Context], Awaitable[Any]]) -> Callable[[Any, Context], Awaitable[Any]]:
            async def logged(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                record = RpcRecord(ids.of(metadata_of(context)), method)
                token = CURRENT_RPC.set(record)
                context.set_trailing_metadata(((REQUEST_ID_HEADER, record.request_id),))
                name = "OK"
                try:
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
