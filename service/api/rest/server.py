"""The uvicorn server's configuration, from Settings."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from service.api.rest.protocol import ConnectionLimits, bounded_protocol, never_draining
from service.settings import Settings


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
