"""grpc.health.v1.Health answered from readiness: SERVING only while the server is ready.

Check reads readiness at call time. Watch sends the status, then each change: at once when draining starts (the
lifecycle's notice, passed to ``changed``), and within WATCH_POLL_S for the model manager's readiness, which
changes only as whole models load or fail (seconds); a stream costs one readiness read per poll, not a busy loop.
When the server stops, Watch streams end (status OK) instead of holding the drain for its whole grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc.observe import Context

WATCH_POLL_S = 1.0
TFSERVING_PACKAGE = "tensorflow.serving."
Status: TypeAlias = int  # a HealthCheckResponse.ServingStatus value


def health_names(services: Iterable[str]) -> frozenset[str]:
    """The names Check and Watch answer for: the server (""), each full service name, and TF Serving's services
    by their short names too (``PredictionService``), as TF Serving's clients ask."""
    names = {""}
    for service in services:
        names.add(service)
        if service.startswith(TFSERVING_PACKAGE):
            names.add(service[len(TFSERVING_PACKAGE) :])
    return frozenset(names)


class ReadinessHealth(health_pb2_grpc.HealthServicer):
    """Check and Watch over ``is_ready``, for the server and every service it serves."""

    def __init__(self, is_ready: Callable[[], bool], services: Iterable[str], poll_s: float = WATCH_POLL_S) -> None:
        self._is_ready = is_ready
        self._names = health_names(services)
        self._poll_s = poll_s
        self._changed = asyncio.Event()
        self._closed = False

    def _status(self) -> Status:
        answer = health_pb2.HealthCheckResponse
        return answer.SERVING if self._is_ready() else answer.NOT_SERVING

    def notify(self) -> None:
        """Readiness may have changed: Watch streams look now (call in the event loop)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every Watch stream (the server is stopping)."""
        self._closed = True
        self.notify()

    async def Check(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status())

    async def Watch(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        known = request.service in self._names
        last: Status | None = None
        while not self._closed:
            # The protocol's answer for a service not served: SERVICE_UNKNOWN, and the stream stays open.
            status = self._status() if known else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._poll_s)
