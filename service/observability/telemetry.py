"""Per-request logging, tracing and request ids: built once by the wiring and shared by every front end."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from service.observability.logs import RequestIds, RequestLog
from service.observability.metrics import Metrics
from service.observability.tracing import NoTracing, RequestTrace, Tracing


@dataclass(frozen=True)
class Telemetry:
    """What every protocol's request observer writes to: the access log, the tracer and the id source."""

    log: RequestLog = field(default_factory=RequestLog)
    tracing: Tracing = field(default_factory=NoTracing)
    ids: RequestIds = field(default_factory=RequestIds)


class RequestRecorder:
    """Counts, times, logs and traces one answered (or abandoned) request, whichever front end served it.

    One per protocol. The labelled series of each (model, version, status) are looked up once and kept: a
    ``.labels()`` lookup costs three times the increment it leads to, twice per request. The keys are bounded as
    the series are (served model names or "", loaded versions, status codes)."""

    def __init__(self, metrics: Metrics, telemetry: Telemetry, protocol: str) -> None:
        self._metrics = metrics
        self._log = telemetry.log
        self._protocol = protocol
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _series_of(self, model: str, version: str, status: int) -> tuple[Counter, Histogram]:
        key = (model, version, status)
        series = self._series.get(key)
        if series is None:
            metrics, protocol = self._metrics, self._protocol
            series = (
                metrics.requests.labels(model, version, protocol, str(status)),
                metrics.request_duration.labels(model, version, protocol),
            )
            self._series[key] = series
        return series

    def record(
        self,
        request_id: str,
        trace: RequestTrace | None,
        outcome: tuple[str, str, int],
        seconds: float,
        body: bytes | None = None,
        grpc_call: tuple[str, str] | None = None,
    ) -> None:
        """``outcome`` is (model, version, HTTP status; for gRPC its HTTP equivalent), ``grpc_call`` a gRPC call's
        method and status name."""
        model, version, status = outcome
        requests, duration = self._series_of(model, version, status)
        requests.inc()
        duration.observe(seconds)
        self._log.emit(request_id, self._protocol, model, version, status, seconds, body, grpc_call)
        if trace is not None:
            trace.finish(model, version, status)
