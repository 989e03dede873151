"""The Open Inference Protocol's gRPC messages, built from a checked-in descriptor set in a private pool.

A private pool, not protobuf's default one: tritonclient, kserve and mlserver each register their own
``inference.*`` files in the default pool, and one process may import them next to rtserve (a test does).
``make protos`` regenerates ``protos/open_inference.binpb`` from ``protos/open_inference.proto``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from service.codecs import proto_pool

PACKAGE = "inference"
SERVICE_NAME = "inference.GRPCInferenceService"
PROTO_FILE = "open_inference.proto"
DESCRIPTOR_SET = "open_inference.binpb"


def descriptor_set_bytes() -> bytes:
    """The serialized FileDescriptorSet as shipped in the package."""
    return proto_pool.descriptor_set_bytes("service.codecs", DESCRIPTOR_SET)


# Immutable protocol vocabulary (like a dtype table), not a service: built once when the module is imported.
POOL, FILE = proto_pool.load_pool("service.codecs", DESCRIPTOR_SET, PROTO_FILE)
SERVICE: ServiceDescriptor = FILE.services_by_name["GRPCInferenceService"]


def _message(name: str) -> Any:
    return proto_pool.message_class(POOL, f"{PACKAGE}.{name}")


# The message classes (typed as Any: they are made at run time, there are no generated stubs to check against).
ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
ModelStreamInferResponse = _message("ModelStreamInferResponse")
RepositoryIndexRequest = _message("RepositoryIndexRequest")
RepositoryIndexResponse = _message("RepositoryIndexResponse")
InferParameter = _message("InferParameter")
InferTensorContents = _message("InferTensorContents")
