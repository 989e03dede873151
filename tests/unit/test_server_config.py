"""The uvicorn configuration built from Settings (service/api/rest/server.py), and what run_server refuses."""

from __future__ import annotations

import pytest

from service.api.rest.server import connection_limits, run_server, uvicorn_config
from service.settings import Settings


async def app(scope: object, receive: object, send: object) -> None:
    """No app runs here: only the configuration is read."""


@pytest.mark.parametrize("drain_s", [0.0, 0.5, 0.999, 1.5, 30.0])
def test_the_drain_timeout_is_the_setting_exactly(drain_s: float) -> None:
    """Before: int(drain_s) or None made every drain below one second unlimited (None), and cut 1.5 s to 1 s."""
    config = uvicorn_config(Settings(drain_timeout_s=drain_s), app)
    assert config.timeout_graceful_shutdown is not None
    assert config.timeout_graceful_shutdown == pytest.approx(drain_s)


def test_connection_limits_come_from_the_settings() -> None:
    settings = Settings(header_timeout_s=3, max_header_bytes=4096, send_timeout_s=7, linger_timeout_s=0)
    limits = connection_limits(settings)
    assert (limits.header_timeout_s, limits.max_header_bytes, limits.send_timeout_s, limits.linger_s) == (3, 4096, 7, 0)


def test_without_rest_and_without_grpc_there_is_nothing_to_serve() -> None:
    class Never:
        draining = False

        def start_draining(self) -> None:
            raise AssertionError("never started")

    with pytest.raises(ValueError, match="nothing to serve: RTSERVE_REST_ENABLED is false and RTSERVE_GRPC_PORT is 0"):
        run_server(Settings(rest_enabled=False, grpc_port=0), app, Never(), [])
