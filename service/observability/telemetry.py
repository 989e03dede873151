"""Per-request logging, tracing and request ids: built once by the wiring and shared by every front end."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.observability.logs import RequestIds, RequestLog
from service.observability.tracing import NoTracing, Tracing


@dataclass(frozen=True)
class Telemetry:
    """What every protocol's request observer writes to: the access log, the tracer and the id source."""

    log: RequestLog = field(default_factory=RequestLog)
    tracing: Tracing = field(default_factory=NoTracing)
    ids: RequestIds = field(default_factory=RequestIds)
