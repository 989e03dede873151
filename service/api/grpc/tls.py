"""TLS on the gRPC ports (TF Serving's --ssl_config_file): the server credentials from RTSERVE_GRPC__SSL_*.

As TF Serving's BuildServerCredentialsFromSSLConfigFile: the key and certificate chain are PEM texts; custom_ca,
when given, is the set of roots client certificates are checked against; client_verify requires a client
certificate signed by one of them (mutual TLS). The same credentials serve the TCP port and the unix socket, as in
TF Serving.
"""

from __future__ import annotations

import grpc

from service.settings import GrpcSettings


def server_credentials(settings: GrpcSettings) -> grpc.ServerCredentials | None:
    """The TLS credentials the settings ask for, or None for plaintext; ValueError naming the setting when the
    settings are incomplete."""
    key, cert = settings.ssl_server_key.strip(), settings.ssl_server_cert.strip()
    if not key and not cert:
        if settings.ssl_client_verify:
            raise ValueError("RTSERVE_GRPC__SSL_CLIENT_VERIFY needs TLS: set RTSERVE_GRPC__SSL_SERVER_KEY and _CERT")
        return None
    if not key or not cert:
        missing = "RTSERVE_GRPC__SSL_SERVER_KEY" if not key else "RTSERVE_GRPC__SSL_SERVER_CERT"
        raise ValueError(f"TLS on gRPC needs both the key and the certificate: {missing} is empty")
    roots = settings.ssl_custom_ca.strip()
    if settings.ssl_client_verify and not roots:
        raise ValueError("RTSERVE_GRPC__SSL_CLIENT_VERIFY needs RTSERVE_GRPC__SSL_CUSTOM_CA, the CA of client certs")
    return grpc.ssl_server_credentials(
        [(settings.ssl_server_key.encode(), settings.ssl_server_cert.encode())],
        root_certificates=settings.ssl_custom_ca.encode() if roots else None,
        require_client_auth=settings.ssl_client_verify,
    )
