"""TensorFlow Serving's REST API: model status, metadata, predict, classify and regress.

Paths follow TF Serving: ``/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict|:classify|:regress]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from google.protobuf import json_format
from starlette.responses import Response

from service.api.offload import Offload, answer_size, inline_only
from service.api.rest import openapi
from service.api.rest.body import BodyLimits
from service.api.rest.fastlane import InferenceRoute, add_routes
from service.api.rest.observe import Answer, InferenceCall, InferenceHandler, InferenceObserver, Reply
from service.api.rest.responses import json_response
from service.codecs import tfserving_json, tfserving_proto
from service.codecs.arrays import Limits
from service.codecs.tfserving import examples_input
from service.dataplane import DataPlane, ModelMetadata, ModelStatus, Target, parse_version
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.tensors import CLASSIFY_METHOD, REGRESS_METHOD

PROTOCOL = "tfserving"
SIGNATURE_MAP_TYPE = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
# The three ways a request names what it wants, as path suffixes after /v1/models/{model_name}.
ADDRESSINGS = ("", "/versions/{version}", "/labels/{label}")


def target_of(params: Mapping[str, str]) -> Target:
    return Target(model=params["model_name"], version=parse_version(params.get("version")), label=params.get("label"))


# -- status and metadata documents --------------------------------------------------------------------------


def status_document(status: ModelStatus) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.value,
                "status": {"error_code": s.error_code.name, "error_message": s.error_message},
            }
            for s in status.versions
        ]
    }


def signature_defs(metadata: ModelMetadata) -> dict[str, Any]:
    """The version's signatures as the JSON form of the SignatureDefMap the gRPC API packs (one mapping for both)."""
    signature_map = tfserving_proto.signature_def_map(metadata.signatures)
    document: dict[str, Any] = json_format.MessageToDict(
        signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return document


def metadata_document(metadata: ModelMetadata) -> dict[str, Any]:
    return {
        "model_spec": {"name": metadata.model, "signature_name": "", "version": metadata.version_label},
        "metadata": {
            "signature_def": {**signature_defs(metadata), "@type": SIGNATURE_MAP_TYPE},
        },
    }


# -- routes -------------------------------------------------------------------------------------------------


def build_router(
    dataplane: DataPlane,
    metrics: Metrics,
    limits: BodyLimits,
    telemetry: Telemetry,
    offload: Offload | None = None,
) -> tuple[APIRouter, list[InferenceRoute]]:
    """The TF Serving REST routes bound to one data plane, and the inference ones for the fast lane.

    ``offload`` decides where bodies are decoded and answers encoded (default: inline)."""
    router = APIRouter(tags=["TensorFlow Serving REST"])
    codec = offload or inline_only(Limits(dataplane.max_tensor_elements))
    observer = InferenceObserver(metrics, PROTOCOL, telemetry)

    async def model_status(request: Request) -> Response:
        """TF Serving GetModelStatus: the state of every version (or one)."""
        return json_response(status_document(dataplane.status(target_of(request.path_params))))

    async def model_metadata(request: Request) -> Response:
        """TF Serving GetModelMetadata: every signature's inputs and outputs."""
        return json_response(metadata_document(dataplane.metadata(target_of(request.path_params))))

    async def predict(call: InferenceCall) -> Reply:
        """Predict with the row (`instances`) or columnar (`inputs`) format."""

        async def work() -> Answer:
            target = target_of(call.params)
            body = await call.body(limits)
            with dataplane.lease(target) as loaded:
                lookup = dataplane.lookup(loaded)
                decoded = await codec.call(len(body), tfserving_json.decode_predict, body, lookup, codec.limits)
                signature = dataplane.signature(loaded, decoded.signature_name)
                dataplane.check_shapes(signature, decoded.inputs)
                deadline = dataplane.deadline(call.arrived, call.timeout_s())
                outputs = await dataplane.run(loaded, signature, decoded.inputs, deadline)
                body_out = await codec.call(
                    answer_size(outputs), tfserving_json.encode_predict, outputs, decoded.columnar
                )
                return Answer(body_out, loaded.model, loaded.version_label)

        return await observer.answer(call, dataplane.metric_label(call.params["model_name"]), work)

    def examples_handler(method: str, encode: Callable[[Mapping[str, np.ndarray]], bytes]) -> InferenceHandler:
        async def handler(call: InferenceCall) -> Reply:
            async def work() -> Answer:
                target = target_of(call.params)
                body = await call.body(limits)
                decoded = await codec.call(len(body), tfserving_json.decode_examples, body, codec.limits)
                with dataplane.lease(target) as loaded:
                    signature = dataplane.signature(loaded, decoded.signature_name, method)
                    inputs = {examples_input(signature): decoded.examples}
                    dataplane.check_shapes(signature, inputs)
                    deadline = dataplane.deadline(call.arrived, call.timeout_s())
                    outputs = await dataplane.run(loaded, signature, inputs, deadline)
                    encoded = await codec.call(answer_size(outputs), encode, outputs)
                    return Answer(encoded, loaded.model, loaded.version_label)

            return await observer.answer(call, dataplane.metric_label(call.params["model_name"]), work)

        return handler

    classify = examples_handler(CLASSIFY_METHOD, tfserving_json.encode_classify_outputs)
    regress = examples_handler(REGRESS_METHOD, tfserving_json.encode_regress_outputs)
    inference: list[InferenceRoute] = []
    for suffix in ADDRESSINGS:
        base = "/v1/models/{model_name}" + suffix
        router.add_api_route(
            base,
            model_status,
            methods=["GET"],
            summary="Model status",
            response_class=Response,
            openapi_extra=openapi.path_parameters(base),
        )
        router.add_api_route(
            base + "/metadata",
            model_metadata,
            methods=["GET"],
            summary="Model metadata",
            response_class=Response,
            openapi_extra=openapi.path_parameters(base),
        )
        inference += [
            InferenceRoute(base + ":predict", predict, "Predict", openapi.tfserving_predict()),
            InferenceRoute(base + ":classify", classify, "Classify", openapi.tfserving_examples()),
            InferenceRoute(base + ":regress", regress, "Regress", openapi.tfserving_examples()),
        ]
    add_routes(router, inference)
    return router, inference
