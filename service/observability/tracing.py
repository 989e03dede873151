"""Optional request tracing: the interface the server uses, and the no-op it uses when tracing is off.

The OpenTelemetry implementation lives in service/observability/otel.py; the wiring (service/app.py) imports it
only when RTSERVE_OTEL__ENABLED is true, so a server without tracing neither imports nor pays for it. The active
request's trace travels to the batcher in a context variable, the way OpenTelemetry's own context does:
``Batcher.submit`` runs in the request's task and records the queue-wait and inference spans of the batch the
request ran in.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Protocol


class RequestTrace(Protocol):
    """The trace of one inference request, open from its arrival to its answer."""

    def record_batch(self, enqueued_at: float, started_at: float, finished_at: float, batch_size: int) -> None:
        """Queue wait (enqueued -> started) and model call (started -> finished), time.monotonic() seconds."""
        ...

    def finish(self, model: str, version: str, status: int) -> None:
        """Close the request's span with its outcome."""
        ...


class Tracing(Protocol):
    enabled: bool

    def start(self, protocol: str, request_id: str, headers: Mapping[str, str]) -> RequestTrace | None:
        """Open a request's trace (continuing the caller's W3C traceparent) and make it the current one."""
        ...

    def shutdown(self) -> None:
        """Export what is pending and stop."""
        ...


# Set for the length of one request by its trace; read by the batcher in the same task.
CURRENT_TRACE: ContextVar[RequestTrace | None] = ContextVar("rtserve_request_trace", default=None)


class NoTracing:
    """Tracing off: nothing is started, nothing is imported."""

    enabled = False

    def start(self, protocol: str, request_id: str, headers: Mapping[str, str]) -> RequestTrace | None:
        return None

    def shutdown(self) -> None:
        return None
