"""The Open Inference Protocol (KServe V2) REST API: server and model metadata, model readiness, infer."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import open_inference
from service.api.deadlines import timeout_parameter
from service.api.offload import Offload, answer_size, inline_only
from service.api.rest import openapi
from service.api.rest.body import BodyLimits
from service.api.rest.fastlane import InferenceRoute, add_routes
from service.api.rest.health import NOT_READY
from service.api.rest.observe import Answer, InferenceCall, InferenceObserver, Reply
from service.api.rest.responses import json_response
from service.codecs import v2_json
from service.codecs.arrays import Limits
from service.dataplane import DataPlane, Target, parse_version
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry

PROTOCOL = "v2"
HEADER_LENGTH = "inference-header-content-length"
OCTET_STREAM = "application/octet-stream"


def target_of(params: Mapping[str, str]) -> Target:
    return Target(model=params["model_name"], version=parse_version(params.get("version")))


def build_router(
    dataplane: DataPlane,
    metrics: Metrics,
    limits: BodyLimits,
    telemetry: Telemetry,
    offload: Offload | None = None,
) -> tuple[APIRouter, list[InferenceRoute]]:
    """The V2 routes bound to one data plane, and the inference ones for the fast lane.

    ``offload`` decides where bodies are decoded and answers encoded (default: inline)."""
    router = APIRouter(tags=["Open Inference Protocol"])
    codec = offload or inline_only(Limits(dataplane.max_tensor_elements))
    observer = InferenceObserver(metrics, PROTOCOL, telemetry)

    async def server_metadata() -> Response:
        """Server name, version and protocol extensions."""
        return json_response(open_inference.server_metadata())

    async def model_metadata(request: Request) -> Response:
        """Inputs and outputs of the model's default signature, and the versions it serves."""
        return json_response(open_inference.model_metadata(dataplane, target_of(request.path_params)))

    async def model_ready(request: Request) -> Response:
        """200 when the model (version) can answer inference requests now, 400 when not."""
        target = target_of(request.path_params)  # a malformed version is an error (the handler's), not "not ready"
        ready = open_inference.model_ready(dataplane, target)
        document = {"name": target.model, "ready": ready}
        return json_response(document, 200 if ready else NOT_READY)

    async def infer(call: InferenceCall) -> Reply:
        """Run the model's default signature on JSON tensors, or on a JSON header plus binary tensors."""

        async def work() -> Answer:
            target = target_of(call.params)
            body = await call.body(limits)
            header_length = v2_json.parse_header_length(call.headers.get(HEADER_LENGTH), len(body))
            with dataplane.lease(target) as loaded:
                signature = dataplane.signature(loaded, None)
                decoded = await codec.call(
                    len(body), v2_json.decode_infer, body, signature, codec.limits, header_length
                )
                dataplane.check_shapes(signature, decoded.inputs)
                deadline = dataplane.deadline(call.arrived, call.timeout_s(), timeout_parameter(decoded.parameters))
                outputs = await dataplane.run(loaded, signature, decoded.inputs, deadline)
                if decoded.requested_outputs is not None:  # names already checked against the signature
                    outputs = {n: outputs[n] for n in decoded.requested_outputs}
                datatypes = {n: signature.outputs[n].dtype for n in outputs if n in signature.outputs}
                binary = frozenset(n for n in outputs if decoded.wants_binary(n))
                encoded, binary_header = await codec.call(
                    answer_size(outputs),
                    v2_json.encode_infer,
                    loaded.model,
                    loaded.version_label,
                    decoded.id,
                    outputs,
                    datatypes,
                    binary.__contains__,
                )
                if binary_header is None:
                    return Answer(encoded, loaded.model, loaded.version_label)
                extra = ((HEADER_LENGTH, str(binary_header)),)
                return Answer(encoded, loaded.model, loaded.version_label, OCTET_STREAM, extra)

        return await observer.answer(call, dataplane.metric_label(call.params["model_name"]), work)

    router.add_api_route("/v2", server_metadata, methods=["GET"], summary="Server metadata")
    router.add_api_route("/v2/", server_metadata, methods=["GET"], include_in_schema=False)
    inference: list[InferenceRoute] = []
    for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"):
        parameters = openapi.path_parameters(base)
        router.add_api_route(base, model_metadata, methods=["GET"], summary="Model metadata", openapi_extra=parameters)
        router.add_api_route(
            base + "/ready", model_ready, methods=["GET"], summary="Model ready", openapi_extra=parameters
        )
        inference.append(InferenceRoute(base + "/infer", infer, "Inference", openapi.v2_infer()))
    add_routes(router, inference)
    return router, inference
