"""The uvicorn server: its configuration from Settings, and its SIGTERM handling (unready at once, then drain)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

import uvicorn
from starlette.types import ASGIApp

from service.api.rest.protocol import ConnectionLimits, bounded_protocol, never_draining
from service.settings import Settings

log = logging.getLogger(__name__)


def connection_limits(settings: Settings, draining: Callable[[], bool] = never_draining) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        send_timeout_s=settings.send_timeout_s,
        linger_s=settings.linger_timeout_s,
        draining=draining,
    )


def uvicorn_config(settings: Settings, app: ASGIApp, draining: Callable[[], bool] = never_draining) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=bounded_protocol(connection_limits(settings, draining)),
        access_log=False,
        # Nothing reads the client address, so uvicorn's X-Forwarded-For rewriting is work on every request for
        # nothing (about 2% of the CPU under load).
        proxy_headers=False,
        log_config=None,  # uvicorn's records go through our handler, in our format
    )
    # uvicorn only hands this to asyncio.wait_for, which takes any number; its annotation says int, and an int
    # would turn a drain of 0.5 s into 0 s (or, as `int(x) or None` did, into an unlimited one).
    config.timeout_graceful_shutdown = settings.drain_timeout_s  # type: ignore[assignment]
    return config


class Draining(Protocol):
    """The process's draining flag (service/app.py's Lifecycle): readiness turns false once it is set."""

    @property
    def draining(self) -> bool: ...

    def start_draining(self) -> None: ...


class Companion(Protocol):
    """Another front end in the same event loop (the gRPC server): its addresses bound before the app's lifespan
    starts (OSError or ValueError: the process exits 1 with that one line, never ready), started once the
    lifespan has started, stopped (in-flight calls finished within the drain timeout) before the lifespan ends
    and the batchers drain."""

    async def bind(self) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


class DrainingServer(uvicorn.Server):
    """On SIGTERM: unready at once, keep answering for shutdown_delay_s, then drain and exit 0."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Draining,
        shutdown_delay_s: float,
        companions: Sequence[Companion] = (),
    ) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._shutdown_delay_s = shutdown_delay_s
        self._companions = tuple(companions)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        for companion in self._companions:
            try:
                await companion.bind()
            except (OSError, ValueError) as error:  # a port taken, settings it cannot serve (TLS without a key)
                log.error("%s", error)
                sys.exit(1)  # as uvicorn does when its own port is taken
        await super().startup(sockets)
        if not self.should_exit:
            for companion in self._companions:
                await companion.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The companions drain alongside the HTTP connections, and the lifespan (which drains the batchers their
        # calls wait on) ends only after both.
        grace_s = self.config.timeout_graceful_shutdown or 0.0
        stopping = asyncio.ensure_future(asyncio.gather(*(c.stop(grace_s) for c in self._companions)))
        end_lifespan = self.lifespan.shutdown

        async def after_companions() -> None:
            await stopping
            await end_lifespan()

        self.lifespan.shutdown = after_companions
        await super().shutdown(sockets)
        await stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._lifecycle.draining:
            super().handle_exit(sig, frame)  # a second signal, or Ctrl-C: uvicorn's own handling
            return
        self._lifecycle.start_draining()
        timer = threading.Timer(self._shutdown_delay_s, self._begin_shutdown)
        timer.daemon = True
        timer.start()

    def _begin_shutdown(self) -> None:
        self.should_exit = True


def run_server(settings: Settings, app: ASGIApp, lifecycle: Draining, companions: Sequence[Companion] = ()) -> None:
    """Serve ``app`` (and the companion front ends) until SIGTERM (then drained) or Ctrl-C.

    With RTSERVE_REST_ENABLED=false no HTTP socket is bound (uvicorn is handed an empty list of sockets), but the
    app's lifespan still runs: the components start and stop exactly once, in the same order, and SIGTERM drains
    the companions as it does with REST on."""
    if not settings.rest_enabled and not companions:
        raise ValueError("nothing to serve: RTSERVE_REST_ENABLED is false and RTSERVE_GRPC_PORT is 0")
    config = uvicorn_config(settings, app, lambda: lifecycle.draining)
    server = DrainingServer(config, lifecycle, settings.shutdown_delay_s, companions)
    if settings.rest_enabled:
        server.run()
        return
    log.info("REST is off (RTSERVE_REST_ENABLED=false, TF Serving's --rest_api_port=0): serving gRPC only")
    server.run(sockets=[])
