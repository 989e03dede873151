"""Every gRPC call through the server's interceptors, on a real grpc.aio server and client in this process: the
request id echoed in the trailing metadata, one access-log line per call (model calls by their RpcObserver, with
model and version; other calls by the interceptor; health not logged), ``traceparent`` continued, and the size
refusal naming the setting on any method; and health Watch following readiness (the draining notice at once, the
manager's readiness by a bounded poll, the stream ended when the server stops).

The servicer is the test's own (the protocol servicers are other modules'): one model call through RpcObserver and
one plain call, both answering health messages so that no proto is compiled here. Its data plane is never used, so
the GrpcDeps get none."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from service.api.grpc.health import ReadinessHealth
from service.api.grpc.observe import Context, RpcCall, RpcObserver, Served
from service.api.grpc.server import GrpcDeps, GrpcFrontEnd, interceptors
from service.app import build_tracing
from service.dataplane import DataPlane
from service.errors import NotFound
from service.observability.logs import ACCESS_LOGGER, RequestLog
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.settings import AuthSettings, OtelSettings, Settings

SERVICE = "test.Echo"
Request = health_pb2.HealthCheckRequest
Answer = health_pb2.HealthCheckResponse
T = TypeVar("T")


def registrar(server: grpc.aio.Server, deps: GrpcDeps) -> Sequence[str]:
    observer = RpcObserver(deps.metrics, "grpc-v2", deps.telemetry)

    async def model(request: Request, context: Context) -> Answer:
        async def work(call: RpcCall) -> Served[Answer]:
            if request.service == "missing":
                raise NotFound("Servable not found for request: Latest(missing)")
            return Served(Answer(status=Answer.SERVING), request.service, "3")

        return await observer.answer(context, request.service, work)

    async def plain(request: Request, context: Context) -> Answer:
        if request.service == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        return Answer(status=Answer.SERVING)

    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=Request.FromString, response_serializer=Answer.SerializeToString
        )
        for name, behaviour in (("Model", model), ("Plain", plain))
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    return [SERVICE]


def serve(settings: Settings, telemetry: Telemetry, body: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    async def run() -> T:
        deps = GrpcDeps(settings, cast(DataPlane, None), Metrics(CollectorRegistry()), telemetry, lambda: True)
        front = GrpcFrontEnd(deps, [registrar])
        await front.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
                return await body(channel)
        finally:
            await front.stop(1.0)

    return asyncio.run(run())


def settings(**changes: Any) -> Settings:
    return Settings(host="127.0.0.1", grpc_port=0, **changes)


async def call(channel: grpc.aio.Channel, method: str, service: str, **kwargs: Any) -> tuple[str, dict[str, str]]:
    """The call's status name and trailing metadata."""
    rpc = channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=Request.SerializeToString, response_deserializer=Answer.FromString
    )
    stub_call = rpc(Request(service=service), timeout=10, **kwargs)
    try:
        await stub_call
    except grpc.aio.AioRpcError as error:
        return error.code().name, dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    return "OK", dict(await stub_call.trailing_metadata() or ())  # type: ignore[arg-type]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.fields for record in caplog.records if record.name == ACCESS_LOGGER]  # type: ignore[attr-defined]


def test_one_line_per_call_with_the_grpc_status_and_the_id_echoed(caplog: pytest.LogCaptureFixture) -> None:
    async def body(channel: grpc.aio.Channel) -> list[tuple[str, dict[str, str]]]:
        results = [
            await call(channel, "Model", "iris", metadata=(("x-request-id", "m-1"),)),
            await call(channel, "Model", "missing", metadata=(("x-request-id", "m-2"),)),
            await call(channel, "Plain", "ok", metadata=(("x-request-id", "p-1"),)),
            await call(channel, "Plain", "bad", metadata=(("x-request-id", "p-2"),)),
            await call(channel, "Plain", "ok"),
        ]
        await health_pb2_grpc.HealthStub(channel).Check(Request())  # health: no line
        return results

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        results = serve(settings(), Telemetry(RequestLog()), body)
    assert [code for code, _ in results] == ["OK", "NOT_FOUND", "OK", "INVALID_ARGUMENT", "OK"]
    assert [trailing.get("x-request-id") for (trailing,) in [(t,) for _, t in results[:4]]] == [
        "m-1",
        "m-2",
        "p-1",
        "p-2",
    ]
    assert len(results[4][1]["x-request-id"]) == 32  # made up when the client sent none
    lines = access_lines(caplog)
    assert len(lines) == 5
    summary = [
        (line["request_id"], line["grpc_method"], line["grpc_status"], line["status"], line["model"], line["version"])
        for line in lines[:4]
    ]
    assert summary == [
        ("m-1", f"/{SERVICE}/Model", "OK", 200, "iris", "3"),
        ("m-2", f"/{SERVICE}/Model", "NOT_FOUND", 404, "missing", ""),
        ("p-1", f"/{SERVICE}/Plain", "OK", 200, "", ""),
        ("p-2", f"/{SERVICE}/Plain", "INVALID_ARGUMENT", 400, "", ""),
    ]
    assert {line["protocol"] for line in lines} == {"grpc-v2", "grpc"}


def test_a_too_large_message_on_any_method_is_refused_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    async def body(channel: grpc.aio.Channel) -> list[tuple[str, dict[str, str]]]:
        return [await call(channel, method, "x" * 1500) for method in ("Model", "Plain")]

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        results = serve(settings(max_body_bytes=1000), Telemetry(RequestLog()), body)
    assert [code for code, _ in results] == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    assert [line["grpc_status"] for line in access_lines(caplog)] == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    assert all(line["status"] == 429 for line in access_lines(caplog))


def test_traceparent_in_metadata_continues_the_trace() -> None:
    exporter = InMemorySpanExporter()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def body(channel: grpc.aio.Channel) -> tuple[str, dict[str, str]]:
        return await call(channel, "Model", "iris", metadata=(("traceparent", parent), ("x-request-id", "t-1")))

    telemetry = Telemetry(RequestLog(), build_tracing(OtelSettings(), exporter))
    assert serve(settings(), telemetry, body)[0] == "OK"
    (span,) = exporter.get_finished_spans()
    assert span.name == "grpc-v2 inference"
    assert span.context is not None and f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert span.attributes is not None and span.attributes["rtserve.request_id"] == "t-1"


# -- health Watch follows readiness -----------------------------------------------------------------------------


def test_watch_follows_readiness_by_poll_and_draining_at_once() -> None:
    ready = {"now": True}

    async def run() -> list[int]:
        # A poll of a minute: a change seen within the test's bound came from the notice, not from the poll.
        health = ReadinessHealth(lambda: ready["now"], [SERVICE], poll_s=60.0)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        seen: list[int] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(Request(service=SERVICE), timeout=30)  # type: ignore[attr-defined]
                seen.append((await asyncio.wait_for(stream.read(), 5)).status)
                ready["now"] = False
                health.notify()  # what the lifecycle's draining notice does, from the event loop
                seen.append((await asyncio.wait_for(stream.read(), 5)).status)
                ready["now"] = True
                # The same notice from another thread (the signal handler's), handed over to the loop.
                loop = asyncio.get_running_loop()
                await asyncio.to_thread(loop.call_soon_threadsafe, health.notify)
                seen.append((await asyncio.wait_for(stream.read(), 5)).status)
                health.close()  # the server stops: the stream ends, OK
                assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
                assert await stream.code() == grpc.StatusCode.OK
        finally:
            await server.stop(0)
        return seen

    assert asyncio.run(run()) == [Answer.SERVING, Answer.NOT_SERVING, Answer.SERVING]


def test_watch_polls_readiness_changes_nobody_announced() -> None:
    ready = {"now": True}

    async def run() -> list[int]:
        health = ReadinessHealth(lambda: ready["now"], [], poll_s=0.05)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(Request(), timeout=30)  # type: ignore[attr-defined]
                first = (await asyncio.wait_for(stream.read(), 5)).status
                ready["now"] = False  # the manager's readiness: no notice
                second = (await asyncio.wait_for(stream.read(), 5)).status
                stream.cancel()
        finally:
            await server.stop(0)
        return [first, second]

    assert asyncio.run(run()) == [Answer.SERVING, Answer.NOT_SERVING]


def test_one_interceptor_gates_keys_logs_each_call_once_and_counts_it(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("secret-key\n")
    configured = settings(max_body_bytes=1000, auth=AuthSettings(keys_file=str(keys)))
    metrics = Metrics(CollectorRegistry())
    deps = GrpcDeps(configured, cast(DataPlane, None), metrics, Telemetry(RequestLog()), lambda: True)
    assert len(interceptors(deps)) == 1  # keys, access log and size check: one await per call, not three

    async def run() -> list[str]:
        front = GrpcFrontEnd(deps, [registrar])
        await front.start()
        key = (("x-api-key", "secret-key"),)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
                calls = [
                    call(channel, "Model", "iris"),
                    call(channel, "Model", "iris", metadata=(("x-api-key", "wrong"),)),
                    call(channel, "Model", "iris", metadata=key),
                    call(channel, "Plain", "ok", metadata=key),
                    call(channel, "Plain", "x" * 1500, metadata=key),
                ]
                return [(await each)[0] for each in calls]
        finally:
            await front.stop(1.0)

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        codes = asyncio.run(run())
    assert codes == ["UNAUTHENTICATED", "PERMISSION_DENIED", "OK", "OK", "RESOURCE_EXHAUSTED"]
    # Refused calls are not logged (as REST); the others once each, the model call by its observer.
    lines = [(line["grpc_method"], line["grpc_status"], line["model"]) for line in access_lines(caplog)]
    assert lines == [
        (f"/{SERVICE}/Model", "OK", "iris"),
        (f"/{SERVICE}/Plain", "OK", ""),
        (f"/{SERVICE}/Plain", "RESOURCE_EXHAUSTED", ""),
    ]
    value = metrics.registry.get_sample_value
    assert value("rtserve_auth_failures_total", {"reason": "missing_key", "protocol": "grpc"}) == 1.0
    assert value("rtserve_auth_failures_total", {"reason": "invalid_key", "protocol": "grpc"}) == 1.0
    counted = {"model_name": "iris", "model_version": "3", "protocol": "grpc-v2", "code": "200"}
    assert value("rtserve_requests_total", counted) == 1.0
