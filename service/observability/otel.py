"""OpenTelemetry tracing over OTLP/HTTP. Imported only when tracing is enabled (service/app.py, build_tracing).

One span per inference request (kind SERVER, continuing a W3C ``traceparent`` from the caller), with two
children recorded after the fact from the batcher's timestamps: ``queue wait`` and ``inference`` (the model
call of the batch the request ran in, with the batch size). The provider is this server's own, not the
process-global one, so that nothing is configured at import time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import Token

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service import __version__
from service.observability.tracing import CURRENT_TRACE, RequestTrace
from service.settings import OtelSettings

_PROPAGATOR = TraceContextTextMapPropagator()


def _wall_ns(monotonic_s: float, offset_ns: int) -> int:
    return int(monotonic_s * 1e9) + offset_ns


class OtelRequestTrace:
    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self._tracer = tracer
        self._span = span
        # Current for the rest of the request's task, so that the batcher finds it.
        self._token: Token[RequestTrace | None] = CURRENT_TRACE.set(self)

    def record_batch(self, enqueued_at: float, started_at: float, finished_at: float, batch_size: int) -> None:
        # The batcher keeps time.monotonic(); spans want the wall clock in nanoseconds.
        offset = time.time_ns() - time.monotonic_ns()
        parent = trace.set_span_in_context(self._span)
        wait = self._tracer.start_span("queue wait", context=parent, start_time=_wall_ns(enqueued_at, offset))
        wait.end(end_time=_wall_ns(started_at, offset))
        inference = self._tracer.start_span(
            "inference",
            context=parent,
            start_time=_wall_ns(started_at, offset),
            attributes={"rtserve.batch_size": batch_size},
        )
        inference.end(end_time=_wall_ns(finished_at, offset))

    def finish(self, model: str, version: str, status: int) -> None:
        self._span.set_attributes(
            {"rtserve.model_name": model, "rtserve.model_version": version, "http.response.status_code": status}
        )
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()
        CURRENT_TRACE.reset(self._token)


class OtelTracing:
    enabled = True

    def __init__(self, settings: OtelSettings, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
        )
        self._provider.add_span_processor(_processor(settings, exporter))
        self._tracer = self._provider.get_tracer("rtserve", __version__)

    def start(self, protocol: str, request_id: str, headers: Mapping[str, str]) -> RequestTrace | None:
        span = self._tracer.start_span(
            f"{protocol} inference",
            context=_PROPAGATOR.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"rtserve.request_id": request_id, "rtserve.protocol": protocol},
        )
        if not span.is_recording():  # not sampled: no child spans either
            span.end()
            return None
        return OtelRequestTrace(self._tracer, span)

    def shutdown(self) -> None:
        self._provider.shutdown()


def _processor(settings: OtelSettings, exporter: SpanExporter | None) -> SpanProcessor:
    if exporter is not None:  # tests hand in an in-memory exporter and read spans as they end
        return SimpleSpanProcessor(exporter)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint))
