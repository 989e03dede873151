"""The gRPC front end over the wiring's components: which protocols it serves."""

from __future__ import annotations

from service.api.grpc import tfserving, v2
from service.api.grpc.server import GrpcDeps, GrpcFrontEnd, Registrar


def build_grpc_app(deps: GrpcDeps) -> GrpcFrontEnd:
    """The gRPC server for every protocol's services (each module adds its own through a Registrar)."""
    registrars: list[Registrar] = [tfserving.register, v2.register]
    return GrpcFrontEnd(deps, registrars)
