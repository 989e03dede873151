"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``tensorflow.serving.ModelService``.

The stubs and messages are ``tensorflow-serving-api``'s. Resolution, validation, batching and deadlines are the
data plane's, as for REST; this module reads the messages, words the data plane's errors as TF Serving does where
clients match its texts, and builds the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from service.api.grpc.observe import Context, RpcCall, RpcObserver, Served
from service.api.grpc.server import GrpcDeps, serialized
from service.api.offload import answer_size
from service.api.tfserving_errors import tf_serving_error
from service.codecs import heads, tfserving_proto
from service.codecs.arrays import Limits
from service.codecs.tfserving import examples_input
from service.dataplane import DataPlane, Target
from service.errors import Code, InvalidArgument, ServingError
from service.tensors import CLASSIFY_METHOD, REGRESS_METHOD, SignatureSpec

PROTOCOL = "grpc-tfserving"

Response = TypeVar("Response")


def target_of(spec: model_pb2.ModelSpec) -> Target:
    """What a ModelSpec addresses: a version (Int64Value), a label, or neither (the default route)."""
    if not spec.name:
        raise InvalidArgument("ModelSpec has no name specified.")  # server_core.cc
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return Target(spec.name, version=spec.version.value)
    if choice == "version_label":
        return Target(spec.name, label=spec.version_label)
    return Target(spec.name)


class _Rpcs:
    """What both services share: the data plane, the observer and TF Serving's wording around every RPC."""

    def __init__(self, deps: GrpcDeps) -> None:
        self.dataplane: DataPlane = deps.dataplane
        settings = deps.settings
        self.limits = Limits(settings.max_tensor_elements, settings.max_string_elements)
        self.tensor_content = settings.grpc.tensor_content
        self.codec = deps.codec()  # where large Predict messages are parsed and their answers built
        self.observer = RpcObserver(deps.metrics, PROTOCOL, deps.telemetry)

    async def answer(
        self, context: Context, model_name: str, work: Callable[[RpcCall], Awaitable[Served[Response]]]
    ) -> Response:
        async def worded(call: RpcCall) -> Served[Response]:
            try:
                return await work(call)
            except ServingError as error:
                raise tf_serving_error(error, "grpc") from None

        return await self.observer.answer(context, self.dataplane.metric_label(model_name), worded)

    async def run(
        self, call: RpcCall, target: Target, signature_name: str, method: str | None, build: _Build
    ) -> Served[Any]:
        """Lease the target's version, find the signature, build its inputs, run them before the deadline."""
        dataplane = self.dataplane
        with dataplane.lease(target) as loaded:
            signature = dataplane.signature(loaded, signature_name or None, method)
            inputs, respond = await build(signature)
            dataplane.check_shapes(signature, inputs)
            deadline = dataplane.deadline(call.arrived, call.timeout_s)
            outputs = await dataplane.run(loaded, signature, inputs, deadline)
            answer = await respond(outputs, loaded.version, signature.name)
            return Served(answer, loaded.model, loaded.version_label)


# How to answer from a request's outputs (the outputs, the version, the signature's name).
_Respond = Callable[[dict[str, np.ndarray], int, str], Awaitable[Any]]
# A request's inputs for a signature, and how to answer from its outputs.
_Build = Callable[[SignatureSpec], Awaitable[tuple[dict[str, np.ndarray], _Respond]]]


# MultiInferenceResponse.results' field number: each task's result, serialized where it was built, is wrapped.
MULTI_RESULTS_FIELD = 1


def _examples(rpcs: _Rpcs, examples: np.ndarray, task: Any) -> _Build:
    """A MultiInference task's inputs (the request's examples, decoded once) and its answer, a serialized
    InferenceResult built where the codec pool says."""

    async def build(signature: SignatureSpec) -> tuple[dict[str, np.ndarray], _Respond]:
        async def respond(outputs: dict[str, np.ndarray], version: int, name: str) -> bytes:
            encode = tfserving_proto.encode_inference_result
            model = task.model_spec.name
            return await rpcs.codec.call(answer_size(outputs), encode, model, version, name, outputs, task.method_name)

        return {examples_input(signature): examples}, respond

    return build


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict, Classify, Regress, MultiInference and GetModelMetadata over the data plane."""

    def __init__(self, rpcs: _Rpcs) -> None:
        self._rpcs = rpcs

    async def Predict(self, data: bytes, context: Context) -> bytes:  # noqa: N802 (the RPC's name)
        encode = partial(tfserving_proto.encode_predict, tensor_content=self._rpcs.tensor_content)
        return await self._serve_bytes(
            data, context, predict_pb2.PredictRequest, None, tfserving_proto.decode_predict, encode
        )

    async def Classify(self, data: bytes, context: Context) -> bytes:  # noqa: N802
        return await self._serve_examples(data, context, CLASSIFY_METHOD)

    async def Regress(self, data: bytes, context: Context) -> bytes:  # noqa: N802
        return await self._serve_examples(data, context, REGRESS_METHOD)

    async def _serve_examples(self, data: bytes, context: Context, method: str) -> bytes:
        request_type = tfserving_proto.EXAMPLE_REQUESTS[method]
        decode, encode = tfserving_proto.decode_examples, tfserving_proto.encode_examples
        return await self._serve_bytes(data, context, request_type, method, decode, encode)

    async def _serve_bytes(
        self,
        data: bytes,
        context: Context,
        request_type: Any,
        method: str | None,
        decode: Callable[[bytes, SignatureSpec, Limits], tuple[dict[str, np.ndarray], Any]],
        encode: Callable[..., bytes],
    ) -> bytes:
        """One RPC on a serialized request (registered with bytes in and out, ``BYTES_RPCS``): its ModelSpec is
        read first; ``decode`` (parse, and the signature's inputs with what the answer needs) and ``encode``
        (model, version, signature, outputs and that -> the serialized answer) run where the codec pool says by
        their size: inline when small, else in a codec worker, off the event loop. Both must be picklable."""
        rpcs = self._rpcs
        try:
            spec = tfserving_proto.request_target(data, request_type)
        except ServingError as error:  # bytes that are no such request
            return await self._refuse(context, error)

        async def build(signature: SignatureSpec) -> tuple[dict[str, np.ndarray], _Respond]:
            inputs, extra = await rpcs.codec.call(len(data), decode, data, signature, rpcs.limits)

            async def respond(outputs: dict[str, np.ndarray], version: int, name: str) -> bytes:
                return await rpcs.codec.call(answer_size(outputs), encode, spec.name, version, name, outputs, extra)

            return inputs, respond

        async def work(call: RpcCall) -> Served[bytes]:
            try:
                target = target_of(spec)
            except InvalidArgument:
                # TF Serving parses the whole message first: bytes that are no such message say so, not this.
                await rpcs.codec.call(len(data), heads.check, request_type, data)
                raise
            return await rpcs.run(call, target, spec.signature_name, method, build)

        return await rpcs.answer(context, spec.name, work)

    async def MultiInference(self, data: bytes, context: Context) -> bytes:  # noqa: N802
        """Every task on one input; the request parsed and its examples serialized, and each task's result built,
        where the codec pool says by their size (as ``_serve_bytes``)."""
        rpcs = self._rpcs
        try:
            first = tfserving_proto.first_task_model(data)
        except ServingError as error:  # bytes that are no MultiInferenceRequest
            return await self._refuse(context, error)

        async def work(call: RpcCall) -> Served[bytes]:
            tasks, examples = await rpcs.codec.call(len(data), tfserving_proto.decode_multi, data, rpcs.limits)
            target = target_of(tasks[0].model_spec)  # every task names the same model; the first one's version
            results: list[bytes] = []
            model, version_label = target.model, ""
            for task in tasks:
                served = await rpcs.run(
                    call, target, task.model_spec.signature_name, task.method_name, _examples(rpcs, examples, task)
                )
                results.append(heads.field_bytes(MULTI_RESULTS_FIELD, served.response))
                model, version_label = served.model_name, served.model_version
            return Served(b"".join(results), model, version_label)

        return await rpcs.answer(context, first, work)

    async def _refuse(self, context: Context, error: ServingError) -> bytes:
        async def refuse(call: RpcCall) -> Served[bytes]:
            raise error

        return await self._rpcs.answer(context, "", refuse)

    async def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        rpcs = self._rpcs

        async def work(call: RpcCall) -> Served[get_model_metadata_pb2.GetModelMetadataResponse]:
            target = target_of(request.model_spec)
            tfserving_proto.check_metadata_fields(request.metadata_field)
            metadata = rpcs.dataplane.metadata(target)
            response = tfserving_proto.metadata_response(metadata.model, metadata.version, metadata.signatures)
            return Served(response, metadata.model, metadata.version_label)

        return await rpcs.answer(context, request.model_spec.name, work)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus and HandleReloadConfigRequest over the data plane."""

    def __init__(self, rpcs: _Rpcs) -> None:
        self._rpcs = rpcs

    async def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: Context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        rpcs = self._rpcs

        async def work(call: RpcCall) -> Served[get_model_status_pb2.GetModelStatusResponse]:
            status = rpcs.dataplane.status(target_of(request.model_spec))
            response = get_model_status_pb2.GetModelStatusResponse()
            for version in status.versions:
                response.model_version_status.add(
                    version=version.version,
                    state=tfserving_proto.state_number(version.state),
                    status=tfserving_proto.status_proto(version.error_code, version.error_message),
                )
            return Served(response, status.model, "")

        return await rpcs.answer(context, request.model_spec.name, work)

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: Context
    ) -> model_management_pb2.ReloadConfigResponse:
        rpcs = self._rpcs

        async def work(call: RpcCall) -> Served[model_management_pb2.ReloadConfigResponse]:
            if request.config.WhichOneof("config") != "model_config_list":
                raise InvalidArgument(  # model_service_impl.cc
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            model_set = tfserving_proto.model_set_of(request.config.model_config_list)
            await asyncio.to_thread(rpcs.dataplane.apply_model_set, model_set)
            response = model_management_pb2.ReloadConfigResponse(status=tfserving_proto.status_proto(Code.OK, ""))
            return Served(response, "", "")

        return await rpcs.answer(context, "", work)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request whose bytes do not parse as its message: answered INVALID_ARGUMENT by the handler, where grpcio
    itself would end the call UNKNOWN (a 5xx for the client's fault)."""

    message_type: str
    reason: str


def _lenient(message: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as error:
            return Malformed(message.DESCRIPTOR.full_name, str(error))

    return deserialize


def _checked(method: Callable[[Any, Context], Awaitable[Any]], observer: RpcObserver) -> Callable[..., Any]:
    async def handler(request: Any, context: Context) -> Any:
        if isinstance(request, Malformed):
            malformed = request

            async def refuse(call: RpcCall) -> Served[Any]:
                raise heads.not_valid(malformed.message_type, malformed.reason)

            return await observer.answer(context, "", refuse)
        return await method(request, context)

    return handler


# RPCs registered with bytes in and out: their servicer methods parse and build messages where their size says.
BYTES_RPCS = frozenset(("Predict", "Classify", "Regress", "MultiInference"))


def _handler(servicer: object, method: Any, observer: RpcObserver) -> grpc.RpcMethodHandler[Any, Any]:
    response = message_factory.GetMessageClass(method.output_type)
    if method.name in BYTES_RPCS:
        behaviour = getattr(servicer, method.name)
        return grpc.unary_unary_rpc_method_handler(behaviour, response_serializer=serialized(response))
    return grpc.unary_unary_rpc_method_handler(
        _checked(getattr(servicer, method.name), observer),
        request_deserializer=_lenient(message_factory.GetMessageClass(method.input_type)),
        response_serializer=response.SerializeToString,
    )


def service_handler(service: Any, servicer: object, observer: RpcObserver) -> grpc.GenericRpcHandler:
    """What the generated ``add_*Servicer_to_server`` registers, with requests that do not parse refused as
    INVALID_ARGUMENT; built from the service's descriptor, so every RPC of it is there."""
    handlers = {method.name: _handler(servicer, method, observer) for method in service.methods}
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def register(server: grpc.aio.Server, deps: GrpcDeps) -> Sequence[str]:
    """The Registrar for TF Serving's two services."""
    rpcs = _Rpcs(deps)
    prediction = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    model = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    server.add_generic_rpc_handlers(
        (
            service_handler(prediction, PredictionService(rpcs), rpcs.observer),
            service_handler(model, ModelService(rpcs), rpcs.observer),
        )
    )
    return (prediction.full_name, model.full_name)
