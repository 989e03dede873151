"""What the Open Inference Protocol's REST and gRPC front ends answer alike: server metadata, model readiness and
the model metadata document, built once here so that the two wires cannot drift apart."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.batch_safety import batching_parameters
from service.codecs import v2_json
from service.dataplane import DataPlane, Target
from service.errors import NotFound

PLATFORM = "tensorflow_savedmodel"
SERVER_NAME = "rtserve"
# Protocol extensions this server implements, as GET /v2 and ServerMetadata list them.
EXTENSIONS = ("binary_tensor_data",)


def server_metadata() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_ready(dataplane: DataPlane, target: Target) -> bool:
    """True when the model (version) can answer inference requests now; an unknown model is not ready."""
    try:
        dataplane.resolve(target)
    except NotFound:
        return False
    return True


def model_metadata(dataplane: DataPlane, target: Target) -> dict[str, Any]:
    """Inputs and outputs of the default signature, the versions served, the platform, and each signature's
    batching verdict as string ``parameters``."""
    metadata = dataplane.metadata(target)
    versions = [str(v) for v in metadata.available_versions]
    document = v2_json.model_metadata(metadata.model, versions, PLATFORM, metadata.signature(None))
    document["parameters"] = batching_parameters(metadata.batching)
    return document
