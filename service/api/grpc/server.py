"""The grpc.aio server: built in the running event loop, its services registered by each protocol's module,
started after the REST server and stopped before the batchers drain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc.observe import Context
from service.dataplane import DataPlane
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrpcDeps:
    """What the gRPC services serve: the wiring's components, seen from here."""

    settings: Settings
    dataplane: DataPlane
    metrics: Metrics
    telemetry: Telemetry
    is_ready: Callable[[], bool]


# Adds a protocol's servicers to the server; returns the full names of the services it added (for health and
# reflection).
Registrar = Callable[[grpc.aio.Server, GrpcDeps], Sequence[str]]


class ReadinessHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health answered from readiness at call time: SERVING only while the server is ready."""

    def __init__(self, is_ready: Callable[[], bool], services: Sequence[str]) -> None:
        self._is_ready = is_ready
        self._services = frozenset(("", *services))

    async def Check(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = (
            health_pb2.HealthCheckResponse.SERVING if self._is_ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=serving)


class GrpcFrontEnd:
    """One gRPC server on RTSERVE_GRPC_PORT for every registered protocol."""

    def __init__(self, deps: GrpcDeps, registrars: Sequence[Registrar]) -> None:
        self._deps = deps
        self._registrars = tuple(registrars)
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None  # the bound port, once started

    async def start(self) -> None:
        settings = self._deps.settings
        server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
        services: list[str] = []
        for register in self._registrars:
            services.extend(register(server, self._deps))
        health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(self._deps.is_ready, services), server)
        self.port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        await server.start()
        self._server = server
        log.info("gRPC listening on %s:%d (%s)", settings.host, self.port, ", ".join(services) or "health only")

    async def stop(self, grace_s: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace_s``, then cancel the rest."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
