"""Server reflection, so that ``grpcurl list`` and ``describe`` work: grpcio-reflection's servicer, offered as
``grpc.reflection.v1alpha.ServerReflection`` (what grpcio-reflection 1.85 ships) and as
``grpc.reflection.v1.ServerReflection``, the name grpcurl >= 1.8.8 asks first. v1 is v1alpha renamed: the same
messages, field for field, so the same servicer and messages answer both. Only v1alpha is listed: no descriptor
of the v1 file is in the pool for ``describe`` to send."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_reflection.v1alpha.reflection import SERVICE_NAME

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
NAMES = (SERVICE_NAME, V1_SERVICE_NAME)


def add_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    """Reflection over ``services`` (and itself) on both names."""
    servicer = ReflectionServicer((*services, SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    v1_service = grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1})
    server.add_generic_rpc_handlers((v1_service,))
