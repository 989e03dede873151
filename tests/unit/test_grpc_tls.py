"""TLS credentials of the gRPC server from RTSERVE_GRPC__SSL_*, the migration pool from RTSERVE_GRPC__MAX_THREADS.
The handshakes themselves: tests/integration/test_tensorflow_model_server_grpc.py, against the real server."""

from __future__ import annotations

import grpc
import pytest

from service.api.grpc.server import migration_pool
from service.api.grpc.tls import server_credentials
from service.settings import GrpcSettings, Settings

KEY, CERT, CA = "-----BEGIN PRIVATE KEY-----", "-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE----- ca"


def test_no_key_no_cert_is_plaintext() -> None:
    assert server_credentials(GrpcSettings()) is None


def test_key_and_cert_give_server_credentials() -> None:
    found = server_credentials(GrpcSettings(ssl_server_key=KEY, ssl_server_cert=CERT))
    assert isinstance(found, grpc.ServerCredentials)
    verified = GrpcSettings(ssl_server_key=KEY, ssl_server_cert=CERT, ssl_custom_ca=CA, ssl_client_verify=True)
    assert isinstance(server_credentials(verified), grpc.ServerCredentials)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ssl_server_key": KEY}, "RTSERVE_GRPC__SSL_SERVER_CERT is empty"),
        ({"ssl_server_cert": CERT}, "RTSERVE_GRPC__SSL_SERVER_KEY is empty"),
        ({"ssl_client_verify": True}, "RTSERVE_GRPC__SSL_CLIENT_VERIFY needs TLS"),
        (
            {"ssl_server_key": KEY, "ssl_server_cert": CERT, "ssl_client_verify": True},
            "RTSERVE_GRPC__SSL_CLIENT_VERIFY needs RTSERVE_GRPC__SSL_CUSTOM_CA",
        ),
    ],
)
def test_incomplete_tls_settings_are_refused_by_name(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_credentials(GrpcSettings(**fields))  # type: ignore[arg-type]


def test_max_threads_sizes_the_pool_for_handlers_that_are_not_coroutines() -> None:
    assert migration_pool(Settings()) is None
    pool = migration_pool(Settings(grpc=GrpcSettings(max_threads=3)))
    assert pool is not None
    try:
        assert pool._max_workers == 3
    finally:
        pool.shutdown()
