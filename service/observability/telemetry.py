"""Per-request logging, tracing and request ids: built once by the wiring and shared by every front end."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.observability.logs import RequestIds, RequestLog
from service.observability.metrics import Metrics
from service.observability.tracing import NoTracing, RequestTrace, Tracing


@dataclass(frozen=True)
class Telemetry:
    """What every protocol's request observer writes to: the access log, the tracer and the id source."""

    log: RequestLog = field(default_factory=RequestLog)
    tracing: Tracing = field(default_factory=NoTracing)
    ids: RequestIds = field(default_factory=RequestIds)


def record_request(
    metrics: Metrics,
    telemetry: Telemetry,
    protocol: str,
    request_id: str,
    trace: RequestTrace | None,
    outcome: tuple[str, str, int],
    seconds: float,
    body: bytes | None = None,
    grpc_call: tuple[str, str] | None = None,
) -> None:
    """Count, time, log and trace one answered (or abandoned) request, whichever front end served it.

    ``outcome`` is (model, version, HTTP status; for gRPC its HTTP equivalent), ``grpc_call`` a gRPC call's method
    and status name."""
    model, version, status = outcome
    metrics.requests.labels(model, version, protocol, str(status)).inc()
    metrics.request_duration.labels(model, version, protocol).observe(seconds)
    telemetry.log.emit(request_id, protocol, model, version, status, seconds, body, grpc_call)
    if trace is not None:
        trace.finish(model, version, status)
