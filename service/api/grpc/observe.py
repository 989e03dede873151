"""What every RPC that serves a model shares: its call (metadata, deadline, request id), and the wrapper that counts,
times, logs and traces it and turns a domain error into a gRPC status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

import grpc

from service.api.errors import http_status
from service.errors import Code, ServingError
from service.observability.logs import REQUEST_ID_HEADER
from service.observability.metrics import Metrics
from service.observability.telemetry import RequestRecorder, Telemetry

log = logging.getLogger(__name__)

Response = TypeVar("Response")
# A servicer's context; its stubs are generic in the request and response types, grpc's runtime class is not.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# TF Serving cuts status messages here (model_servers/grpc_status_util.cc), with this marker.
MAX_MESSAGE_CHARS = 1024
TRUNCATED = "...TRUNCATED"


def status_code(code: Code) -> grpc.StatusCode:
    """The gRPC status for a domain code: the same canonical code, by name."""
    return grpc.StatusCode[code.name]


def status_message(message: str) -> str:
    """A status message as TF Serving sends it: at most 1024 characters, the cut marked."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - len(TRUNCATED)] + TRUNCATED


def metadata_of(context: Context) -> dict[str, str]:
    """The call's text metadata with lower-case keys (binary ``-bin`` entries are skipped)."""
    pairs = context.invocation_metadata() or ()
    return {key.lower(): value for key, value in pairs if isinstance(value, str)}


@dataclass(slots=True)
class RpcRecord:
    """What the access-log interceptor (service/api/grpc/access.py) knows of the call it wraps: its id and method;
    ``logged`` once an RpcObserver has written the call's line, with its model and version."""

    request_id: str
    method: str
    logged: bool = False
    metadata: Mapping[str, str] | None = None  # the call's text metadata, read once for both


# The call the running task serves (set by the access-log interceptor around each call; a context variable holds
# no state of its own, each task sees its own value).
CURRENT_RPC: ContextVar[RpcRecord | None] = ContextVar("rtserve_grpc_call", default=None)


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One RPC as the data plane needs it: who asked (metadata), when, and by when it must be answered."""

    metadata: Mapping[str, str]
    request_id: str
    arrived: float = field(default_factory=time.monotonic)  # time.monotonic()
    timeout_s: float | None = None  # what the client's gRPC deadline left when the call arrived


@dataclass(frozen=True, slots=True)
class Served(Generic[Response]):
    """An RPC's answer and the model version that produced it."""

    response: Response
    model_name: str
    model_version: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A model RPC that failed: its domain code and message, not yet a gRPC status."""

    code: Code
    message: str


class RpcObserver:
    """Counts, times, logs, traces and maps the outcome of every model RPC for one protocol label."""

    def __init__(self, metrics: Metrics, protocol: str, telemetry: Telemetry) -> None:
        self._protocol = protocol
        self._inflight = metrics.inflight.labels(protocol)
        self._telemetry = telemetry
        self._recorder = RequestRecorder(metrics, telemetry, protocol)

    async def answer(
        self,
        context: Context,
        served_model: str,
        work: Callable[[RpcCall], Awaitable[Served[Response]]],
    ) -> Response:
        """Run ``work``; ``served_model`` is the label failures count under ("" for models not served here)."""
        outcome = await self.attempt(context, served_model, work)
        if isinstance(outcome, Failed):
            await context.abort(status_code(outcome.code), status_message(outcome.message))
            raise AssertionError("context.abort returned")  # abort always raises
        return outcome

    async def attempt(
        self,
        context: Context,
        served_model: str,
        work: Callable[[RpcCall], Awaitable[Served[Response]]],
    ) -> Response | Failed:
        """As ``answer``, but a failure is returned, not raised: one message of a stream fails, the stream goes on."""
        started = time.perf_counter()
        record = CURRENT_RPC.get()
        metadata = record.metadata if record is not None and record.metadata is not None else metadata_of(context)
        rid = self._telemetry.ids.of(metadata) if record is None else record.request_id
        method = "" if record is None else record.method
        if record is not None:
            record.logged = True
        tracing = self._telemetry.tracing
        trace = tracing.start(self._protocol, rid, metadata) if tracing.enabled else None
        call = RpcCall(metadata, rid, timeout_s=context.time_remaining())
        context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
        model, version, code, message = served_model, "", Code.OK, ""
        self._inflight.inc()
        try:
            served = await work(call)
            model, version = served.model_name, served.model_version
            return served.response
        except ServingError as error:
            code, message = error.code, error.message
        except asyncio.CancelledError:
            code = Code.CANCELLED  # the client cancelled or its deadline passed: nobody reads an answer
            raise
        except Exception:  # our fault: say so and keep serving
            log.exception("unexpected error serving %s request %s", self._protocol, rid)
            code, message = Code.INTERNAL, "internal error; see the server log"
        finally:
            self._inflight.dec()
            seconds = time.perf_counter() - started
            outcome = (model, version, http_status(code))
            self._recorder.record(rid, trace, outcome, seconds, None, (method, code.name))
        return Failed(code, message)
