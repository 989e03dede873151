"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` as the specification and Triton's
clients expect it, over the data plane.

Registered with generic handlers from the private descriptor pool's service (``service/codecs/v2_messages.py``),
so the method names are ``/inference.GRPCInferenceService/<Rpc>``. Triton RPCs this server does not offer
(ModelConfig, ModelStatistics, model load/unload, shared memory, trace and log settings) are not registered, and
grpc answers them UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import grpc
from google.protobuf import message_factory

from service.api import open_inference
from service.api.deadlines import timeout_parameter
from service.api.grpc.observe import Context, Failed, RpcCall, RpcObserver, Served, status_code, status_message
from service.api.grpc.server import GrpcDeps, serialized
from service.api.offload import answer_size
from service.codecs import v2_messages, v2_proto
from service.codecs.arrays import Limits, quote
from service.dataplane import DataPlane, ModelStatus, Target, parse_version
from service.errors import ServingError, Unavailable
from service.states import VersionState

PROTOCOL = "grpc-v2"
SERVICE_NAME = v2_messages.SERVICE_NAME

# TF Serving's version states (rtserve's) as Triton's RepositoryIndex names them.
TRITON_STATES: Mapping[VersionState, str] = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
}
READY = "READY"
INFERENCE_RPCS = frozenset(("ModelInfer", "ModelStreamInfer"))


def register(server: grpc.aio.Server, deps: GrpcDeps) -> Sequence[str]:
    """The Registrar: adds GRPCInferenceService to ``server``."""
    server.add_generic_rpc_handlers((OpenInferenceService(deps).handler(),))
    return (SERVICE_NAME,)


def target_of(name: str, version: str) -> Target:
    """A request's model and version; an empty version is the server's choice (the model's default)."""
    return Target(model=name, version=parse_version(version or None))


def repository_index(models: Sequence[ModelStatus], ready_only: bool) -> Any:
    """Triton's RepositoryIndexResponse: every model and version with its state and the reason for it; a model
    with no version yet is one row without a version, UNAVAILABLE."""
    response = v2_messages.RepositoryIndexResponse()
    for model in models:
        rows = [
            (str(s.version), TRITON_STATES.get(s.state, "UNAVAILABLE"), s.error_message) for s in model.versions
        ] or [("", "UNAVAILABLE", "no version of the model is loaded yet")]
        for version, state, reason in rows:
            if not ready_only or state == READY:
                response.models.add(name=model.model, version=version, state=state, reason=reason)
    return response


def model_metadata(document: Mapping[str, Any]) -> Any:
    """The shared V2 metadata document (``open_inference.model_metadata``) as a ModelMetadataResponse."""
    tensor = v2_messages.ModelMetadataResponse.TensorMetadata
    return v2_messages.ModelMetadataResponse(
        name=document["name"],
        versions=document["versions"],
        platform=document["platform"],
        inputs=[tensor(**entry) for entry in document["inputs"]],
        outputs=[tensor(**entry) for entry in document["outputs"]],
        properties=document["parameters"],
    )


class OpenInferenceService:
    """The RPCs, each a coroutine over the data plane."""

    def __init__(self, deps: GrpcDeps) -> None:
        settings = deps.settings
        self._dataplane: DataPlane = deps.dataplane
        self._is_ready = deps.is_ready
        self._limits = Limits(settings.max_tensor_elements, settings.max_string_elements)
        self._codec = deps.codec()
        self._window = settings.grpc.stream_window
        self._observer = RpcObserver(deps.metrics, PROTOCOL, deps.telemetry)

    def handler(self) -> grpc.GenericRpcHandler:
        """Generic handlers for every RPC of the descriptor's service, (de)serialized by its own messages."""
        rpcs: dict[str, Callable[..., Any]] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
            "ModelStreamInfer": self.model_stream_infer,
            "RepositoryIndex": self.repository_index,
        }
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in v2_messages.SERVICE.methods:
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            make = (
                grpc.stream_stream_rpc_method_handler
                if method.client_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            # Inference requests arrive as bytes and answers leave as bytes: a large one is parsed and built in
            # a codec worker, not on the event loop (OpenInferenceService._infer).
            inference = method.name in INFERENCE_RPCS
            handlers[method.name] = make(
                rpcs[method.name],
                request_deserializer=None if inference else request.FromString,
                response_serializer=serialized(response) if inference else response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    # -- server and model state ---------------------------------------------------------------------------

    async def server_live(self, request: Any, context: Context) -> Any:
        """True while the process answers: no dependency checks, as REST's /v2/health/live."""
        return v2_messages.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Context) -> Any:
        return v2_messages.ServerReadyResponse(ready=self._is_ready())

    async def model_ready(self, request: Any, context: Context) -> Any:
        """As REST's /v2/models/{m}/ready: ready=false (not an error) for a model or version that cannot answer."""
        return await _control(
            context,
            lambda: v2_messages.ModelReadyResponse(
                ready=open_inference.model_ready(self._dataplane, target_of(request.name, request.version))
            ),
        )

    async def server_metadata(self, request: Any, context: Context) -> Any:
        document = open_inference.server_metadata()
        return v2_messages.ServerMetadataResponse(
            name=document["name"], version=document["version"], extensions=document["extensions"]
        )

    async def model_metadata(self, request: Any, context: Context) -> Any:
        """The same document as REST's GET /v2/models/{m}; the batching verdicts go in ``properties``."""
        return await _control(
            context,
            lambda: model_metadata(
                open_inference.model_metadata(self._dataplane, target_of(request.name, request.version))
            ),
        )

    async def repository_index(self, request: Any, context: Context) -> Any:
        """Every served model (one repository: ``repository_name`` is not used to choose)."""
        return repository_index(self._dataplane.index(), request.ready)

    # -- inference ----------------------------------------------------------------------------------------

    async def model_infer(self, data: bytes, context: Context) -> Any:
        head = _head_or_refusal(data)
        label = "" if isinstance(head, ServingError) else self._dataplane.metric_label(head.model_name)
        return await self._observer.answer(context, label, partial(self._infer, data, head))

    async def _infer(self, data: bytes, head: Any, call: RpcCall) -> Served[bytes]:
        """Parse, decode, run and answer one serialized ModelInferRequest (``head``: its addressing fields, or
        the refusal of bytes that are no such message). Parsing with decoding, and building the answer with
        serializing, run where ``self._codec`` says by their size: inline when small, else in a codec worker."""
        if isinstance(head, ServingError):
            raise head
        dataplane, codec = self._dataplane, self._codec
        target = target_of(head.model_name, head.model_version)
        dataplane.model(target.model)  # unknown: NOT_FOUND
        if target.version is None and not open_inference.model_ready(dataplane, target):
            # Known but nothing loaded yet (or any more): retry later, as KServe and Triton answer.
            raise Unavailable(f"model {quote(target.model)} has no AVAILABLE version yet")
        with dataplane.lease(target) as loaded:
            signature = dataplane.signature(loaded, None)
            decoded = await codec.call(len(data), v2_proto.decode_request_bytes, data, signature, self._limits)
            dataplane.check_shapes(signature, decoded.inputs)
            # The shortest of the gRPC deadline, the `timeout` parameter and RTSERVE_REQUEST_TIMEOUT_S.
            deadline = dataplane.deadline(call.arrived, call.timeout_s, timeout_parameter(decoded.parameters))
            outputs = await dataplane.run(loaded, signature, decoded.inputs, deadline)
            if decoded.requested_outputs is not None:  # names already checked against the signature
                outputs = {name: outputs[name] for name in decoded.requested_outputs}
            datatypes = {name: signature.outputs[name].dtype for name in outputs if name in signature.outputs}
            response = await codec.call(
                answer_size(outputs),
                v2_proto.encode_response_bytes,
                loaded.model,
                loaded.version_label,
                decoded.id,
                outputs,
                datatypes,
                decoded.raw,
            )
            return Served(response, loaded.model, loaded.version_label)

    async def model_stream_infer(self, requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        """Answers in request order. At most ``stream_window`` requests of the stream are in work at once: the
        stream is read no further until the oldest is answered, and HTTP/2 flow control holds the client back."""
        slots = asyncio.Semaphore(self._window)
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()  # at most stream_window tasks

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    pending.put_nowait(asyncio.ensure_future(self._stream_one(request, context)))
            finally:
                pending.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                try:
                    yield await task
                finally:
                    slots.release()
            await reader  # a failed read fails the stream
        finally:
            reader.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if left is not None:
                    left.cancel()

    async def _stream_one(self, data: bytes, context: Context) -> bytes:
        head = _head_or_refusal(data)
        label = "" if isinstance(head, ServingError) else self._dataplane.metric_label(head.model_name)
        outcome = await self._observer.attempt(context, label, partial(self._infer, data, head))
        if isinstance(outcome, Failed):
            # Triton's shape: the error's message, and the request's name, version and id to match it by.
            echo = v2_messages.ModelInferResponse()
            if not isinstance(head, ServingError):
                echo = v2_messages.ModelInferResponse(
                    model_name=head.model_name, model_version=head.model_version, id=head.id
                )
            message = v2_messages.ModelStreamInferResponse(
                error_message=status_message(outcome.message), infer_response=echo
            )
            return bytes(message.SerializeToString())
        return v2_proto.stream_response_bytes(outcome)


def _head_or_refusal(data: bytes) -> Any:
    """The request's addressing fields, or the refusal of bytes that are no ModelInferRequest (raised inside the
    observer, so that it is counted and logged as the call's outcome)."""
    try:
        return v2_proto.infer_head(data)
    except ServingError as error:
        return error


async def _control(context: Context, produce: Callable[[], Any]) -> Any:
    """A state or metadata answer; a domain error becomes its gRPC status (these RPCs are not counted as
    inference)."""
    try:
        return produce()
    except ServingError as error:
        await context.abort(status_code(error.code), status_message(error.message))
        raise AssertionError("context.abort returned") from error
