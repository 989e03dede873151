"""TensorFlow Serving's REST API: model status, metadata, predict, classify and regress.

Paths follow TF Serving: ``/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict|:classify|:regress]``.
Errors are TF Serving's words and HTTP codes (``service.api.tfserving_errors``), whichever command started the
server: a TF Serving client is one either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
from service.api.tfserving_errors import tf_serving_error
from service.codecs import tfserving_json, tfserving_proto
from service.codecs.arrays import Limits, echo
from service.codecs.tfserving import examples_input
from service.dataplane import DataPlane, ModelMetadata, ModelStatus, Target
from service.errors import InvalidArgument, ServingError
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.tensors import CLASSIFY_METHOD, REGRESS_METHOD

PROTOCOL = "tfserving"
# The three ways a request names what it wants, as path suffixes after /v1/models/{model_name}.
ADDRESSINGS = ("", "/versions/{version}", "/labels/{label}")


_INT64_MAX = 2**63 - 1


def target_of(params: Mapping[str, str], request_line: str) -> Target:
    """What a path addresses. TF Serving's path pattern takes digits only for a version (http_rest_api_util.cc
    kPredictionApiGegex ``/versions/(\\d+)``): anything else matches no route, ``Malformed request: <method>
    <path>``; digits beyond int64 fail ``absl::SimpleAtoi`` (ParseModelInfo). Leading zeros are the number."""
    text = params.get("version")
    version = None
    if text is not None:
        if not (text.isascii() and text.isdigit()):
            raise InvalidArgument(f"Malformed request: {echo(request_line)}")  # http_rest_api_handler.cc
        digits = text.lstrip("0") or "0"  # 00000123 is 123, as absl::SimpleAtoi reads it
        if len(digits) > len(str(_INT64_MAX)) or int(digits) > _INT64_MAX:
            raise InvalidArgument(f"Failed to convert version: {echo(text)} to numeric.")
        version = int(digits)
    return Target(model=params["model_name"], version=version, label=params.get("label"))


def inference_line(params: Mapping[str, str], verb: str) -> str:
    """The request line of an inference call, rebuilt from its path parameters (the call carries no path)."""
    where = "".join(f"/{kind}s/{params[kind]}" for kind in ("version", "label") if kind in params)
    return f"POST /v1/models/{params['model_name']}{where}:{verb}"


@contextmanager
def worded() -> Iterator[None]:
    """The data plane's errors in TF Serving's REST words."""
    try:
        yield
    except ServingError as error:
        raise tf_serving_error(error, "rest") from None


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


# The key order of TF Serving's documents (protobuf's C++ JSON printer, as its REST answers show them): fields
# in field-number order, set or not (Python's printer puts the set ones first), a TensorInfo's oneof ``name``
# after dtype and tensor_shape, map entries sorted by key.
_SIGNATURE_KEYS = ("inputs", "outputs", "method_name", "defaults")
_TENSOR_INFO_KEYS = ("dtype", "tensor_shape", "name")
_SHAPE_KEYS = ("dim", "unknown_rank")


def _ordered(document: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    return {**{key: document[key] for key in first if key in document}, **document}


def _tensor_info(info: dict[str, Any]) -> dict[str, Any]:
    if "tensor_shape" in info:
        info = {**info, "tensor_shape": _ordered(info["tensor_shape"], _SHAPE_KEYS)}
    return _ordered(info, _TENSOR_INFO_KEYS)


def signature_defs(metadata: ModelMetadata) -> dict[str, Any]:
    """The version's signatures as the JSON form of the SignatureDefMap the gRPC API packs (one mapping for both),
    with TF Serving's field names (preserve_proto_field_names) and order."""
    signature_map = tfserving_proto.signature_def_map(metadata.signatures)
    document: dict[str, Any] = json_format.MessageToDict(
        signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    # Maps by key, sorted as TF Serving prints them (a Python protobuf map keeps no order).
    signatures = {}
    for name, signature in sorted(document["signature_def"].items()):
        for side in ("inputs", "outputs"):
            signature[side] = {alias: _tensor_info(info) for alias, info in sorted(signature[side].items())}
        signatures[name] = _ordered(signature, _SIGNATURE_KEYS)
    return {**document, "signature_def": signatures}


def metadata_document(metadata: ModelMetadata) -> dict[str, Any]:
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): the model spec, and the SignatureDefMap
    unpacked from its Any (so no "@type" key: TF Serving prints the map, not the Any)."""
    return {
        "model_spec": {"name": metadata.model, "signature_name": "", "version": metadata.version_label},
        "metadata": {"signature_def": signature_defs(metadata)},
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
        with worded():
            target = target_of(request.path_params, f"GET {request.url.path}")
            return json_response(status_document(dataplane.status(target)))

    async def model_metadata(request: Request) -> Response:
        """TF Serving GetModelMetadata: every signature's inputs and outputs."""
        with worded():
            target = target_of(request.path_params, f"GET {request.url.path}")
            return json_response(metadata_document(dataplane.metadata(target)))

    async def predict(call: InferenceCall) -> Reply:
        """Predict with the row (`instances`) or columnar (`inputs`) format."""

        async def work() -> Answer:
            with worded():
                return await predict_work()

        async def predict_work() -> Answer:
            target = target_of(call.params, inference_line(call.params, "predict"))
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

    def examples_handler(
        method: str, verb: str, encode: Callable[[Mapping[str, np.ndarray]], bytes]
    ) -> InferenceHandler:
        async def handler(call: InferenceCall) -> Reply:
            async def work() -> Answer:
                with worded():
                    return await examples_work()

            async def examples_work() -> Answer:
                target = target_of(call.params, inference_line(call.params, verb))
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

    async def no_model_name(request: Request) -> Response:
        """TF Serving's status path without a model: refused as TF Serving refuses it."""
        raise InvalidArgument("Missing model name in request.")  # http_rest_api_handler.cc ProcessModelStatusRequest

    router.add_api_route(
        "/v1/models",
        no_model_name,
        methods=["GET"],
        summary="Model status (a name is required)",
        response_class=Response,
    )
    classify = examples_handler(CLASSIFY_METHOD, "classify", tfserving_json.encode_classify_outputs)
    regress = examples_handler(REGRESS_METHOD, "regress", tfserving_json.encode_regress_outputs)
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
