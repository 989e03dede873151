"""The grpc.aio server: built in the running event loop, its services registered by each protocol's module, its
ports bound before the REST server starts (so a port in use stops the process before it is ever ready), started
once the REST lifespan has started the manager, and stopped before the batchers drain."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc.access import AccessLog
from service.api.grpc.auth import ApiKeyGate
from service.api.grpc.health import ReadinessHealth
from service.api.grpc.options import message_limit, server_options
from service.api.grpc.reflection import NAMES as REFLECTION_NAMES
from service.api.grpc.reflection import add_reflection
from service.api.grpc.tls import server_credentials
from service.api.keys import KeyFile
from service.api.offload import Offload, inline_only
from service.codecs.arrays import Limits
from service.dataplane import DataPlane
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.settings import Settings

log = logging.getLogger(__name__)

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Health and reflection: exempt from API keys by setting, never in the access log.
HOUSEKEEPING = frozenset((HEALTH_NAME, *REFLECTION_NAMES))


def _never(_callback: Callable[[], None]) -> None:
    return None


@dataclass(frozen=True)
class GrpcDeps:
    """What the gRPC services serve: the wiring's components, seen from here."""

    settings: Settings
    dataplane: DataPlane
    metrics: Metrics
    telemetry: Telemetry
    is_ready: Callable[[], bool]
    # Registers a callback run (from any thread) when draining starts: health Watch streams hear of it at once.
    on_draining: Callable[[Callable[[], None]], None] = _never
    # Where large request messages are parsed and large answers built (the REST front end's pool); None: inline.
    offload: Offload | None = None

    def codec(self) -> Offload:
        """The codec pool, or one that runs everything inline when the wiring gave none."""
        return self.offload or inline_only(Limits(self.settings.max_tensor_elements))


# Adds a protocol's servicers to the server; returns the full names of the services it added (for health and
# reflection).
Registrar = Callable[[grpc.aio.Server, GrpcDeps], Sequence[str]]


def interceptors(deps: GrpcDeps) -> list[grpc.aio.ServerInterceptor]:
    """One interceptor: API keys (a refused call is not logged, as REST), the access log, the size check."""
    settings = deps.settings
    gate = None
    if settings.auth.keys_file is not None:
        exempt = HOUSEKEEPING if settings.grpc.auth_exempt_health else frozenset()
        gate = ApiKeyGate(KeyFile(Path(settings.auth.keys_file)), exempt, deps.metrics.auth_failures)
    return [AccessLog(deps.telemetry, HOUSEKEEPING, message_limit(settings), gate)]


def serialized(message_class: Any) -> Callable[[Any], bytes]:
    """A response serializer for RPCs whose answers may come serialized already (built in a codec worker)."""
    serialize = message_class.SerializeToString

    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else bytes(serialize(response))

    return serializer


def check_port_free(host: str, port: int) -> None:
    """Raise OSError when ``host:port`` cannot be bound (grpc's own failure is a vague line plus core noise)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc sets: TIME_WAIT does not count
        probe.bind((host, port))


def check_socket_free(path: str) -> None:
    """Raise OSError when a live server answers on the unix socket ``path``. grpc replaces a socket file that is
    there (a stale one, left by a process that died, must not block a restart), a live one included."""
    if not Path(path).is_socket():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return  # nobody listens: stale
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


class GrpcFrontEnd:
    """One gRPC server on RTSERVE_GRPC_PORT (and RTSERVE_GRPC__SOCKET_PATH) for every registered protocol."""

    def __init__(self, deps: GrpcDeps, registrars: Sequence[Registrar]) -> None:
        self._deps = deps
        self._registrars = tuple(registrars)
        self._server: grpc.aio.Server | None = None
        self._health: ReadinessHealth | None = None
        self._services: list[str] = []
        self.port: int | None = None  # the bound port, once bound

    async def bind(self) -> None:
        """Build the server and bind its addresses; OSError with one line naming the setting when one is taken."""
        settings = self._deps.settings
        credentials = server_credentials(settings.grpc)  # ValueError before anything is bound
        server = grpc.aio.server(
            migration_thread_pool=migration_pool(settings),
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
            interceptors=interceptors(self._deps),
        )
        services: list[str] = []
        for register in self._registrars:
            services.extend(register(server, self._deps))
        services.append(HEALTH_NAME)
        health = ReadinessHealth(self._deps.is_ready, services)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        add_reflection(server, services)
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            check_port_free(settings.host, settings.grpc_port)
            self.port = _add_port(server, address, credentials)
        except (OSError, RuntimeError) as error:
            raise OSError(f"cannot listen for gRPC on {address} (RTSERVE_GRPC_PORT): {_reason(error)}") from None
        if settings.grpc.socket_path:
            try:
                check_socket_free(settings.grpc.socket_path)
                _add_port(server, f"unix:{settings.grpc.socket_path}", credentials)
            except (OSError, RuntimeError) as error:
                raise OSError(
                    f"cannot listen for gRPC on unix:{settings.grpc.socket_path} (RTSERVE_GRPC__SOCKET_PATH): "
                    f"{_reason(error)}"
                ) from None
        loop = asyncio.get_running_loop()
        self._deps.on_draining(lambda: _call_in(loop, health.notify))
        self._server, self._health, self._services = server, health, services

    async def start(self) -> None:
        if self._server is None:
            await self.bind()
        assert self._server is not None
        await self._server.start()
        settings = self._deps.settings
        socket_path = f" and unix:{settings.grpc.socket_path}" if settings.grpc.socket_path else ""
        tls = ", TLS" + (" with client certificates" if settings.grpc.ssl_client_verify else "")
        tls = tls if settings.grpc.ssl_server_cert else ""
        log.info(
            "gRPC listening on %s:%d%s%s (%s)", settings.host, self.port, socket_path, tls, ", ".join(self._services)
        )

    async def stop(self, grace_s: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace_s``, then cancel the rest. Health Watch
        streams end first: they never finish by themselves."""
        if self._health is not None:
            self._health.close()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None


def migration_pool(settings: Settings) -> ThreadPoolExecutor | None:
    """The threads grpc.aio runs handlers that are not coroutines on (RTSERVE_GRPC__MAX_THREADS, TF Serving's
    --grpc_max_threads); every rtserve handler is a coroutine, so no RPC waits for one. None: grpc's default."""
    workers = settings.grpc.max_threads
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-sync") if workers else None


def _add_port(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        return server.add_insecure_port(address)
    try:
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        # The address was free (checked before): grpc failed to load the key and certificate.
        raise ValueError(
            f"cannot listen for gRPC on {address} with TLS: RTSERVE_GRPC__SSL_SERVER_KEY and "
            "RTSERVE_GRPC__SSL_SERVER_CERT are not a PEM private key and the certificate chain that matches it"
        ) from None


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return "the address is in use or cannot be bound"


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is watching any more
        loop.call_soon_threadsafe(callback)
