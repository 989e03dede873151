"""What every inference route shares: the call it receives, the reply it gives, and the wrapper that counts, times
and shapes the outcome (error body, status mapping, X-Model-Version and X-Request-Id headers), logs one line for it
and traces it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from service.api.deadlines import positive_seconds
from service.api.errors import HttpError
from service.api.rest.body import BodyLimits, read_body
from service.api.rest.responses import JSON, ErrorAnswer, error_answer, plain_error
from service.errors import ServingError
from service.observability.logs import REQUEST_ID_HEADER
from service.observability.metrics import Metrics
from service.observability.telemetry import RequestRecorder, Telemetry
from service.observability.tracing import RequestTrace

log = logging.getLogger(__name__)

# nginx's status for a request whose client closed the connection first (TF Serving's CANCELLED maps to it too).
CLIENT_CLOSED_REQUEST = 499
# A client's deadline for its request, in milliseconds from its arrival (docs/operations.md "Deadlines").
TIMEOUT_HEADER = "x-request-timeout-ms"


@dataclass(frozen=True, slots=True)
class InferenceCall:
    """An inference request, independent of the framework that received it."""

    params: Mapping[str, str]  # path parameters: model_name, and version or label when given
    headers: Mapping[str, str]  # lower-case names
    chunks: AsyncIterator[bytes]  # the body, as it arrives
    # The body once read, for a sampled payload log line (RTSERVE_LOG_PAYLOAD_SAMPLE_RATE).
    received: list[bytes] = field(default_factory=list)
    # time.monotonic() when the request reached the app: its deadline counts from here.
    arrived: float = field(default_factory=time.monotonic)
    # Given by a front end that records the request once its answer is sent (the fast lane): the observer puts
    # the counting and the log line here instead of doing them before the answer leaves. None: at once.
    after_reply: list[Callable[[], None]] | None = None

    async def body(self, limits: BodyLimits) -> bytes:
        data = await read_body(self.headers, self.chunks, limits)
        self.received.append(data)
        return data

    def timeout_s(self) -> float | None:
        """The client's own deadline from the X-Request-Timeout-Ms header, in seconds; None when not sent."""
        text = self.headers.get(TIMEOUT_HEADER)
        return None if text is None else positive_seconds(text, 1e-3, f"header {TIMEOUT_HEADER}", "milliseconds")


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful inference: the body and the model version that produced it."""

    body: bytes
    model_name: str
    model_version: str
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, ready for Starlette or for raw ASGI."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


InferenceHandler = Callable[[InferenceCall], Awaitable[Reply]]


class InferenceObserver:
    """Counts, times, logs, traces and shapes the outcome of every inference request for one protocol."""

    def __init__(self, metrics: Metrics, protocol: str, telemetry: Telemetry) -> None:
        self._protocol = protocol
        self._inflight = metrics.inflight.labels(protocol)
        self._recorder = RequestRecorder(metrics, telemetry, protocol)
        self._tracing = telemetry.tracing
        self._ids = telemetry.ids

    async def answer(self, call: InferenceCall, served_model: str, work: Callable[[], Awaitable[Answer]]) -> Reply:
        """Run ``work`` for ``call``; ``served_model`` is the label to count failures under ("" for unknown
        models)."""
        started = time.perf_counter()
        rid = self._ids.of(call.headers)
        trace = self._tracing.start(self._protocol, rid, call.headers) if self._tracing.enabled else None
        self._inflight.inc()
        model, version = served_model, ""
        try:
            result = await work()
            model, version = result.model_name, result.model_version
            headers = (("x-model-version", version), (REQUEST_ID_HEADER, rid), *result.headers)
            reply = Reply(200, result.body, result.content_type, headers)
        except (ServingError, HttpError) as error:
            reply = self._error(rid, error_answer(error))
        except asyncio.CancelledError:
            # The client went away (the fast lane cancels on http.disconnect): counted as nginx does, 499.
            gone = self._error(
                rid, plain_error(CLIENT_CLOSED_REQUEST, "the client closed the connection before the answer")
            )
            self._record(call, rid, trace, time.perf_counter() - started, (model, version, gone.status))
            raise
        except Exception:  # our fault: say so with a 500 and keep serving
            log.exception("unexpected error serving %s request %s", self._protocol, rid)
            reply = self._error(rid, plain_error(500, "internal error; see the server log"))
        finally:
            self._inflight.dec()
        seconds = time.perf_counter() - started  # the latency is the answer's, wherever it is recorded
        if call.after_reply is None:
            self._record(call, rid, trace, seconds, (model, version, reply.status))
        else:
            call.after_reply.append(lambda: self._record(call, rid, trace, seconds, (model, version, reply.status)))
        return reply

    def _record(
        self, call: InferenceCall, rid: str, trace: RequestTrace | None, seconds: float, outcome: tuple[str, str, int]
    ) -> None:
        """Count, time, log and trace one answered (or abandoned) request."""
        self._recorder.record(rid, trace, outcome, seconds, call.received[0] if call.received else None)

    @staticmethod
    def _error(rid: str, answer: ErrorAnswer) -> Reply:
        return Reply(answer.status, answer.body, JSON, ((REQUEST_ID_HEADER, rid), *answer.headers))
