"""A thin ASGI lane for the inference POSTs, in front of FastAPI.

The inference routes are still registered with FastAPI (so the OpenAPI document describes them, and a request the
lane does not take still works), but the lane matches them first with the same path patterns and answers without
the framework's routing, request and response objects: on the hot path those cost more than the model call of a
small model. Everything else goes to FastAPI untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.rest.observe import InferenceCall, InferenceHandler, Reply
from service.api.rest.openapi import path_parameters


@dataclass(frozen=True)
class InferenceRoute:
    path: str  # a FastAPI path template, e.g. /v1/models/{model_name}:predict
    handler: InferenceHandler
    summary: str
    # The request body (and any header) for the OpenAPI document; path parameters are added from ``path``.
    openapi_extra: dict[str, Any] = field(default_factory=dict)


def to_response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, headers=dict(reply.headers), media_type=reply.content_type)


def add_routes(router: APIRouter, routes: list[InferenceRoute]) -> None:
    """Register inference routes with FastAPI (documentation and fallback), all through the same handlers."""
    for route in routes:
        router.add_api_route(
            route.path,
            _framework_endpoint(route.handler),
            methods=["POST"],
            summary=route.summary,
            response_class=Response,
            openapi_extra=_with_path_parameters(route),
        )


def _with_path_parameters(route: InferenceRoute) -> dict[str, Any]:
    declared = path_parameters(route.path)["parameters"] + route.openapi_extra.get("parameters", [])
    return route.openapi_extra | {"parameters": declared}


def _framework_endpoint(handler: InferenceHandler) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        call = InferenceCall(dict(request.path_params), request.headers, request.stream())
        return to_response(await handler(call))

    return endpoint


class FastLane:
    """ASGI middleware: POSTs matching an inference route are answered here, the rest go to ``app``."""

    def __init__(self, app: FastAPI, routes: list[InferenceRoute]) -> None:
        self._app: ASGIApp = app
        self.fastapi = app  # the control plane behind the lane (its OpenAPI document, its routes)
        self._routes = [(compile_path(route.path)[0], route.handler) for route in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and has_encoded_slash(scope):
            scope = {**scope, "path": routing_path(scope["raw_path"])}
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, handler in self._routes:
                match = pattern.match(path)
                if match is not None:
                    await self._serve(scope, receive, send, match, handler)
                    return
        await self._app(scope, receive, send)

    @staticmethod
    async def _serve(
        scope: Scope, receive: Receive, send: Send, match: re.Match[str], handler: InferenceHandler
    ) -> None:
        params = {name: value for name, value in match.groupdict().items() if value is not None}
        receiver = _Receiver(receive)
        # The request is counted and logged once its answer is on its way: at low load that is a fifth of the
        # time between the socket and the answer, and the client need not wait for it.
        after_reply: list[Callable[[], None]] = []
        call = InferenceCall(params, _headers(scope), receiver.chunks(), after_reply=after_reply)
        try:
            reply = await handler(call)
        except asyncio.CancelledError:
            if not receiver.gone():
                raise
            return  # the client is gone: nothing to send
        finally:
            receiver.stop()
        headers = [
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"content-length", str(len(reply.body)).encode("latin-1")),
        ]
        headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            for record in after_reply:  # also when sending failed: the request was answered, and is counted
                record()


# How long an answer may take before the fast lane watches for its client going away.
WATCH_AFTER_S = 0.001


def _headers(scope: Scope) -> Mapping[str, str]:
    # ASGI servers send lower-case header names; a request has a handful, so a dict is cheaper than a view.
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


class _Receiver:
    """The request side of one exchange: the body as it arrives, then a watch for the client going away.

    Once the body is in, nothing else reads ``receive``: while the answer is awaited a small task does, and an
    ``http.disconnect`` cancels the request's task, so that work nobody waits for leaves the model's queue (the
    batcher drops a cancelled request) and is counted as 499 instead of running and counting as a 200. The task
    starts only once the answer has taken WATCH_AFTER_S: most answers come sooner, and a timer costs a fifth of
    a task.
    """

    __slots__ = ("_cancelled", "_receive", "_task", "_timer", "_watch", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.Task[None] | None = None
        self.disconnected = False
        self._cancelled = False  # the watch cancelled the request's task

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":  # gone mid-body: a 499 too, not a 400 for a cut body
                self.disconnected = True
                raise asyncio.CancelledError("the client went away while sending its body")
            yield message.get("body", b"")
            if not message.get("more_body", False):
                self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_watch)
                return

    def _start_watch(self) -> None:
        self._watch = asyncio.ensure_future(self._watch_disconnect())

    async def _watch_disconnect(self) -> None:
        # After the body, a server's receive() answers only when the client goes away (or the answer is sent);
        # anything else ends the watch rather than risk spinning.
        if (await self._receive())["type"] == "http.disconnect" and self._task is not None:
            self.disconnected = True
            self._cancelled = True
            self._task.cancel()

    def gone(self) -> bool:
        """Whether a CancelledError came from the client going away; if so it is done with (uncancelled)."""
        if self._cancelled and self._task is not None:
            self._task.uncancel()
        return self.disconnected

    def stop(self) -> None:
        """The answer is ready (or failed): stop watching before it is sent."""
        if self._timer is not None:
            self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()


ENCODED_SLASH = re.compile(b"%2[fF]")


def has_encoded_slash(scope: Scope) -> bool:
    raw: bytes = scope.get("raw_path") or b""
    return b"%2" in raw and ENCODED_SLASH.search(raw) is not None


def routing_path(raw_path: bytes) -> str:
    """The path to route on: decoded, except that ``%2F`` stays as sent.

    The server hands on ``path`` fully decoded, where ``/v1/models/a%2Fversions%2F2`` would route to version 2
    of model ``a``. Kept encoded, ``%2F`` is part of its segment, as RFC 3986 reads it: here the name
    ``a%2Fversions%2F2``, which no model has (names come from a strict pattern), so it is not found, in the fast
    lane and in FastAPI's routes alike.
    """
    return "%2F".join(unquote(part.decode("latin-1")) for part in ENCODED_SLASH.split(raw_path))
