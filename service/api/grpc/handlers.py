"""What the server's interceptors share: a method's service name, and a method handler rebuilt around its
behaviour (grpcio's handlers are named tuples with one behaviour set, for the method's kind)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from service.api.grpc.observe import Context

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# What an interceptor is handed: the next interceptor's (or the server's) handler for a call, None for a method
# no service has.
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
# A method's behaviour: (request or request iterator, context) -> answer, answer iterator, or None.
Behaviour = Callable[[Any, Context], Any]
# How an interceptor wraps an async behaviour (a coroutine function) of a method.
Around = Callable[[Callable[[Any, Context], Awaitable[Any]]], Callable[[Any, Context], Awaitable[Any]]]

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def service_of(method: str) -> str:
    """The full service name of ``/package.Service/Method``."""
    return method[1:].rpartition("/")[0]


def behaviour_of(handler: Handler) -> tuple[str, Behaviour]:
    """The handler's kind (unary_unary, ...) and its behaviour."""
    for kind in _KINDS:
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return kind, behaviour
    raise ValueError("a gRPC method handler without a behaviour")


def replaced(handler: Handler, **fields: Any) -> Handler:
    return handler._replace(**fields)  # type: ignore[attr-defined, no-any-return]


def refusing(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    """A handler of the same kind that refuses every call with ``code`` without reading its request."""

    async def refuse(_request: Any, context: Context) -> None:
        await context.abort(code, message)

    kind, _ = behaviour_of(handler)
    return replaced(handler, request_deserializer=None, **{kind: refuse})


def is_async(behaviour: Behaviour) -> bool:
    """Whether grpc.aio runs the behaviour in the event loop (a coroutine or async generator function)."""
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


def around_call(handler: Handler, around: Around) -> Handler:
    """The handler with ``around`` wrapped about its behaviour; an async generator behaviour (a response stream)
    is first made a coroutine that writes each answer, so that one wrapper fits every kind. Sync behaviours (run
    in grpc's thread pool; none of ours) are left as they are."""
    kind, behaviour = behaviour_of(handler)
    if inspect.isasyncgenfunction(behaviour):
        stream = behaviour

        async def written(request: Any, context: Context) -> None:
            async for answer in stream(request, context):
                await context.write(answer)

        behaviour = written
    elif not inspect.iscoroutinefunction(behaviour):
        return handler
    return replaced(handler, **{kind: around(behaviour)})


class HandlerCache:
    """One wrapped handler per method, made on its first call (grpc hands back the same handler object for a
    method each time, so a call costs a dict lookup, not new closures)."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler:
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)  # only methods of registered services have a handler
        return wrapped
