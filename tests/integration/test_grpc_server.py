"""The gRPC server around the protocol servicers, on the real process with real grpc clients: health Check and
Watch tied to readiness, reflection (v1alpha and v1), the message-size limit naming its setting, the concurrency
bound, API keys in metadata, no port sharing, SIGTERM, the unix socket and the connection age."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from apptools import ServerProcess, free_port, publish, running_server, wait_until
from service.repository.local import LocalRepository

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
MAX_BODY = 4096
KEY = "k-grpc-7d1e0b"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 10.0  # a bound on waits for what should happen at once
PING_INTERVAL_S = 2.0  # grpc clients ping at most about once a second, whatever they are told


def server_env(folder: Path, demo_model_dir: Path, **extra: str) -> dict[str, str]:
    publish(LocalRepository(folder / "repo"), "iris", 1, demo_model_dir)
    return {
        "RTSERVE_REPOSITORY": str(folder / "repo"),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.5",
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("grpc")
    env = server_env(
        folder,
        demo_model_dir,
        RTSERVE_MAX_BODY_BYTES=str(MAX_BODY),
        RTSERVE_GRPC__KEEPALIVE_MIN_PING_INTERVAL_S=str(PING_INTERVAL_S),
    )
    with running_server(env, folder) as process:
        yield process


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as chan:
        yield chan


def check(chan: grpc.Channel, service: str = "", **kwargs: object) -> int:
    stub = health_pb2_grpc.HealthStub(chan)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S, **kwargs)  # type: ignore[arg-type]
    return int(answer.status)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return raised.value.code()  # type: ignore[no-any-return, attr-defined]


# -- health ---------------------------------------------------------------------------------------------------


def test_health_check_is_serving_for_the_server_and_its_services(channel: grpc.Channel) -> None:
    assert check(channel) == SERVING
    assert check(channel, HEALTH) == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        check(channel, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in unknown.value.details()


def test_health_watch_answers_unknown_services_with_service_unknown(channel: grpc.Channel) -> None:
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT_S)
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    stream.cancel()


# -- reflection -----------------------------------------------------------------------------------------------


def test_reflection_lists_and_describes_every_service(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {HEALTH, REFLECTION} <= services
    pool = DescriptorPool(database)
    health = pool.FindServiceByName(HEALTH)
    assert {method.name for method in health.methods} >= {"Check", "Watch"}
    assert pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest").fields_by_name["service"].number == 1


def test_reflection_answers_on_the_v1_name_too(channel: grpc.Channel) -> None:
    # grpcurl >= 1.8.8 asks v1 first; v1's messages are v1alpha's, field for field.
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=WAIT_S))
    assert {HEALTH, REFLECTION} <= {service.name for service in answers[0].list_services_response.service}


# -- the message-size limit -----------------------------------------------------------------------------------


def test_a_message_over_the_body_limit_is_refused_naming_the_setting(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        check(channel, "s" * (MAX_BODY + 10))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RTSERVE_MAX_BODY_BYTES" in raised.value.details() and str(MAX_BODY) in raised.value.details()
    # A streamed request message as well (reflection is a bidirectional stream).
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    big = reflection_pb2.ServerReflectionRequest(file_containing_symbol="x" * (MAX_BODY + 10))
    with pytest.raises(grpc.RpcError) as streamed:
        list(info(iter([big]), timeout=WAIT_S))
    assert streamed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RTSERVE_MAX_BODY_BYTES" in streamed.value.details()
    # Far beyond it grpc refuses by itself, with the same code; the server keeps serving either way.
    assert code_of(lambda: check(channel, "s" * (3 * MAX_BODY))) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert check(channel, "") == SERVING


def test_a_message_at_the_limit_is_parsed(channel: grpc.Channel) -> None:
    name = "s" * (MAX_BODY - 8)  # field tag and length take the rest
    assert code_of(lambda: check(channel, name)) == grpc.StatusCode.NOT_FOUND  # parsed: an unknown service


# -- keepalive enforcement ----------------------------------------------------------------------------------


async def ready_for(target: str, ping_every_ms: int, seconds: float) -> float:
    """How long a grpc.aio channel that pings its idle connection every ``ping_every_ms`` stays READY after a
    call, up to ``seconds``."""
    options = [
        ("grpc.keepalive_time_ms", ping_every_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # no client-side cap on pings without calls
    ]
    async with grpc.aio.insecure_channel(target, options=options) as chan:
        await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)  # type: ignore[attr-defined]
        started = time.monotonic()
        state = chan.get_state()
        while state == grpc.ChannelConnectivity.READY:
            left = seconds - (time.monotonic() - started)
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(chan.wait_for_state_change(state), left)
            state = chan.get_state()
        return time.monotonic() - started


def test_keepalive_pings_at_the_interval_are_welcome(server: ServerProcess) -> None:
    # grpc's default would call these pings (one per 3 s, no calls) abuse, closing at the third: its minimum is
    # 5 minutes.
    assert asyncio.run(ready_for(server.grpc_target, int(PING_INTERVAL_S * 1500), 10.0)) >= 10.0


def test_keepalive_pings_too_close_together_close_the_connection(server: ServerProcess) -> None:
    # Two strikes: GOAWAY ENHANCE_YOUR_CALM ("too_many_pings"), and the channel leaves READY.
    assert asyncio.run(ready_for(server.grpc_target, 100, WAIT_S)) < WAIT_S


# -- the concurrency bound ------------------------------------------------------------------------------------


def test_calls_beyond_max_concurrent_rpcs_are_refused_at_once(tmp_path: Path, demo_model_dir: Path) -> None:
    env = server_env(tmp_path, demo_model_dir, RTSERVE_GRPC__MAX_CONCURRENT_RPCS="2")
    with running_server(env, tmp_path) as process, grpc.insecure_channel(process.grpc_target) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        # Two Watch streams stay open: they are the calls in flight.
        watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
        assert [next(watch).status for watch in watches] == [SERVING, SERVING]
        with pytest.raises(grpc.RpcError) as refused:
            check(chan)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        watches[0].cancel()
        wait_until(lambda: _serves(chan), WAIT_S, 0.05, "a freed slot to take a call")
        watches[1].cancel()


BURST = 2000


def test_a_burst_of_calls_on_one_channel_is_not_dropped(tmp_path: Path, demo_model_dir: Path) -> None:
    # grpcio drops calls waiting to be picked up at random past 1,000 (all past 3,000): at its defaults 169 of
    # such a burst came back CANCELLED here. Within the concurrency bound, every call is answered.
    env = server_env(tmp_path, demo_model_dir, RTSERVE_GRPC__MAX_CONCURRENT_RPCS=str(2 * BURST))
    with running_server(env, tmp_path) as process:
        codes = asyncio.run(burst(process.grpc_target, BURST))
    assert codes == {"OK": BURST}


async def burst(target: str, calls: int) -> dict[str, int]:
    """``calls`` health Checks at once from a grpc.aio channel: how many ended with each status."""
    async with grpc.aio.insecure_channel(target) as chan:
        stub = health_pb2_grpc.HealthStub(chan)

        async def one() -> str:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)  # type: ignore[attr-defined]
            except grpc.aio.AioRpcError as error:
                return str(error.code().name)
            return "OK"

        await one()  # connected before the burst
        codes: dict[str, int] = {}
        for code in await asyncio.gather(*(one() for _ in range(calls))):
            codes[code] = codes.get(code, 0) + 1
        return codes


def _serves(chan: grpc.Channel) -> bool:
    try:
        return check(chan) == SERVING
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False


# -- API keys -------------------------------------------------------------------------------------------------


def test_api_keys_in_metadata(tmp_path: Path, demo_model_dir: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# keys\n{KEY}\n")
    env = server_env(
        tmp_path, demo_model_dir, RTSERVE_AUTH__KEYS_FILE=str(keys), RTSERVE_GRPC__AUTH_EXEMPT_HEALTH="false"
    )
    with running_server(env, tmp_path) as process, grpc.insecure_channel(process.grpc_target) as chan:
        assert code_of(lambda: check(chan)) == grpc.StatusCode.UNAUTHENTICATED
        for metadata in ((("authorization", "Bearer wrong"),), (("x-api-key", KEY + "x"),)):
            assert code_of(lambda m=metadata: check(chan, metadata=m)) == grpc.StatusCode.PERMISSION_DENIED
        assert check(chan, metadata=(("authorization", f"Bearer {KEY}"),)) == SERVING
        assert check(chan, metadata=(("x-api-key", KEY),)) == SERVING
        with pytest.raises(grpc.RpcError) as missing:
            ProtoReflectionDescriptorDatabase(chan).get_services()
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "API key is required" in missing.value.details()
        # A method no service has is UNIMPLEMENTED with or without a key (grpcurl's v1 -> v1alpha fallback).
        absent = chan.unary_unary("/no.Such/Method")
        assert code_of(lambda: absent(b"", timeout=WAIT_S)) == grpc.StatusCode.UNIMPLEMENTED
        metrics = httpx.get(process.url + "/metrics", timeout=WAIT_S).text
    counted = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in metrics.splitlines() if line[:1] != "#"
    }
    assert counted['rtserve_auth_failures_total{protocol="grpc",reason="missing_key"}'] >= 2
    assert counted['rtserve_auth_failures_total{protocol="grpc",reason="invalid_key"}'] == 2


def test_health_and_reflection_need_no_key_by_default(tmp_path: Path, demo_model_dir: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    env = server_env(tmp_path, demo_model_dir, RTSERVE_AUTH__KEYS_FILE=str(keys))
    with running_server(env, tmp_path) as process, grpc.insecure_channel(process.grpc_target) as chan:
        assert check(chan) == SERVING
        assert HEALTH in ProtoReflectionDescriptorDatabase(chan).get_services()


# -- no port sharing ------------------------------------------------------------------------------------------


def start_expecting_failure(tmp_path: Path, env: dict[str, str], name: str) -> tuple[int, str]:
    process = ServerProcess(env, free_port(), tmp_path / name)
    try:
        code = process.process.wait(120)
    finally:
        process.kill()
    return code, process.log_path.read_text(errors="replace")


def test_a_second_server_on_the_same_grpc_port_fails_to_start(server: ServerProcess, tmp_path: Path) -> None:
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_GRPC_PORT": str(server.grpc_port),
    }
    (tmp_path / "repo").mkdir()
    code, log = start_expecting_failure(tmp_path, env, "second.log")
    assert code != 0, log
    assert f"cannot listen for gRPC on 127.0.0.1:{server.grpc_port} (RTSERVE_GRPC_PORT)" in log, log
    assert "Traceback" not in log, log
    assert "Uvicorn running" not in log, log  # it exited before serving anything
    # The first server never shared its port: it still answers every call.
    with grpc.insecure_channel(server.grpc_target) as chan:
        assert all(check(chan) == SERVING for _ in range(20))


def test_a_grpc_port_in_use_at_start_up_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "repo").mkdir()
        env = {"RTSERVE_REPOSITORY": str(tmp_path / "repo"), "RTSERVE_CACHE_DIR": str(tmp_path / "cache")}
        env["RTSERVE_GRPC_PORT"] = str(port)
        code, log = start_expecting_failure(tmp_path, env, "taken.log")
    assert code == 1, log
    lines = [line for line in log.splitlines() if "cannot listen for gRPC" in line]
    assert len(lines) == 1 and "address already in use" in lines[0], log
    assert "Traceback" not in log, log


# -- SIGTERM --------------------------------------------------------------------------------------------------

SHUTDOWN_DELAY_S = 3.0
DRAIN_TIMEOUT_S = 20.0


def test_sigterm_health_not_serving_at_once_served_for_the_delay_then_refused(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    env = server_env(
        tmp_path,
        demo_model_dir,
        RTSERVE_SHUTDOWN_DELAY_S=str(SHUTDOWN_DELAY_S),
        RTSERVE_DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
    )
    process = ServerProcess(env, free_port(), tmp_path / "server.log")
    try:
        process.wait_ready()
        with grpc.insecure_channel(process.grpc_target) as chan:
            watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == SERVING
            seen: list[tuple[int, float]] = []
            ended: list[grpc.StatusCode] = []

            def follow() -> None:
                try:
                    for answer in watch:
                        seen.append((int(answer.status), time.monotonic()))
                    ended.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    ended.append(error.code())

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            signalled = time.monotonic()
            process.process.send_signal(signal.SIGTERM)
            wait_until(lambda: seen, WAIT_S, 0.02, "the Watch stream to hear of the SIGTERM")
            assert seen[0][0] == NOT_SERVING
            # Well within the shutdown delay: the lifecycle's notice, not a poll.
            assert seen[0][1] - signalled < SHUTDOWN_DELAY_S
            # During the delay calls are still served: Check answers, NOT_SERVING.
            assert check(chan) == NOT_SERVING
            # After it, new calls are refused; the Watch stream was ended by the server, not cut.
            wait_until(lambda: _refused(chan), SHUTDOWN_DELAY_S + WAIT_S, 0.1, "new calls to be refused")
            follower.join(WAIT_S)
            assert ended == [grpc.StatusCode.OK]
        # The open Watch stream did not hold the exit for the drain timeout.
        assert process.process.wait(DRAIN_TIMEOUT_S - 5) == 0
        assert time.monotonic() - signalled < DRAIN_TIMEOUT_S
    finally:
        process.kill()
    assert "Traceback" not in process.log_path.read_text(errors="replace")


def _refused(chan: grpc.Channel) -> bool:
    try:
        check(chan)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.UNAVAILABLE
    return False


def test_sigterm_model_rpc_in_flight_finishes_after_the_shutdown_delay(tmp_path: Path) -> None:
    """A slow model's Predict in flight at SIGTERM completes OK after the shutdown delay; a new Predict after the
    delay is refused with UNAVAILABLE; the process exits 0."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from modelfactory import slow_model

    repository = LocalRepository(tmp_path / "repo")
    repository.upload_version("slow", 1, slow_model(tmp_path / "slow", matmuls=12000))  # seconds per call
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_BATCHING__ENABLED": "false",  # one warm-up call, not one per batch size
        "RTSERVE_SHUTDOWN_DELAY_S": "1",
        "RTSERVE_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
    }
    process = ServerProcess(env, free_port(), tmp_path / "server.log")
    try:
        process.wait_ready(180)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "slow"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32))
        with grpc.insecure_channel(process.grpc_target) as chan:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
            in_flight = stub.Predict.future(request, timeout=60)

            def running() -> bool:
                metrics = httpx.get(process.url + "/metrics", timeout=5).text
                return 'rtserve_inflight_requests{protocol="grpc-tfserving"} 1.0' in metrics

            wait_until(running, WAIT_S, 0.02, "the Predict to be in flight")
            signalled = time.monotonic()
            process.process.send_signal(signal.SIGTERM)
            answer = in_flight.result(timeout=DRAIN_TIMEOUT_S)
            assert tf.make_ndarray(answer.outputs["y"]).shape == (1, 1)  # (its value overflows: it is a cost)
            assert answer.model_spec.version.value == 1
            # The delay (1 s) is over by now or soon: then new calls are refused, not queued.
            wait_until(lambda: time.monotonic() - signalled > 1.0, 5, 0.05, "the shutdown delay to pass")
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert process.process.wait(DRAIN_TIMEOUT_S) == 0
    finally:
        process.kill()
    assert "Traceback" not in process.log_path.read_text(errors="replace")


def test_a_second_sigterm_exits_at_once(tmp_path: Path, demo_model_dir: Path) -> None:
    env = server_env(tmp_path, demo_model_dir, RTSERVE_SHUTDOWN_DELAY_S="60", RTSERVE_DRAIN_TIMEOUT_S="60")
    process = ServerProcess(env, free_port(), tmp_path / "server.log")
    try:
        process.wait_ready()
        with grpc.insecure_channel(process.grpc_target) as chan:
            watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == SERVING
            process.process.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            process.process.send_signal(signal.SIGTERM)
            # As for REST: not the 60 s delay nor the drain; uvicorn re-raises the signal, so the exit is SIGTERM's.
            assert process.process.wait(30) in (0, -signal.SIGTERM)
    finally:
        process.kill()


# -- unix socket and connection age ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aged_server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("grpc-aged")
    env = server_env(
        folder,
        demo_model_dir,
        RTSERVE_GRPC__SOCKET_PATH=str(folder / "rtserve.sock"),
        RTSERVE_GRPC__MAX_CONNECTION_AGE_S="1",
        RTSERVE_DRAIN_TIMEOUT_S="1",
    )
    with running_server(env, folder) as process:
        yield process


def test_the_unix_socket_serves_the_same_services(aged_server: ServerProcess) -> None:
    path = Path(aged_server.log_path.parent / "rtserve.sock")
    with grpc.insecure_channel(f"unix:{path}") as chan:
        assert check(chan) == SERVING
        assert HEALTH in ProtoReflectionDescriptorDatabase(chan).get_services()


def test_a_second_server_on_the_same_socket_fails_to_start(aged_server: ServerProcess, tmp_path: Path) -> None:
    path = aged_server.log_path.parent / "rtserve.sock"
    (tmp_path / "repo").mkdir()
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_GRPC__SOCKET_PATH": str(path),
    }
    code, log = start_expecting_failure(tmp_path, env, "second.log")
    assert code == 1, log
    assert f"cannot listen for gRPC on unix:{path} (RTSERVE_GRPC__SOCKET_PATH): address already in use" in log, log
    with grpc.insecure_channel(f"unix:{path}") as chan:
        assert check(chan) == SERVING  # the first server kept its socket


def test_a_connection_is_replaced_after_the_maximum_age(aged_server: ServerProcess) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(aged_server.grpc_target) as chan:
        assert check(chan) == SERVING
        chan.subscribe(states.append)
        # The server's GOAWAY after about a second (+-10% jitter) takes the channel out of READY...
        wait_until(lambda: grpc.ChannelConnectivity.IDLE in states, WAIT_S, 0.05, "the connection to be aged out")
        # ...and the next call opens a new connection.
        assert check(chan) == SERVING
        chan.unsubscribe(states.append)


def test_without_a_maximum_age_the_connection_stays(server: ServerProcess) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(server.grpc_target) as chan:
        assert check(chan) == SERVING
        chan.subscribe(states.append)
        time.sleep(2.0)  # twice the age the test above uses
        chan.unsubscribe(states.append)
    assert grpc.ChannelConnectivity.IDLE not in states, states
