"""A quick loopback check of the gRPC server's own cost: health Check calls per second on one channel, against
the real server (``--target``) or in this process with and without the interceptors (the API-key check, the
access log, the message-size check), to show what each adds per call.

    python -m bench.grpc_loopback --target 127.0.0.1:8081 --seconds 3
    python -m bench.grpc_loopback --seconds 3          # in-process: plain, size check, every interceptor
    python -m bench.grpc_loopback --micro               # CPU per call of the size check, and of each interceptor
                                                        # chain, without grpc

Bounded: ``--seconds`` per phase, ``--concurrency`` calls in flight on one channel, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc.access import AccessLog
from service.api.grpc.auth import ApiKeyGate, ApiKeyInterceptor
from service.api.grpc.health import ReadinessHealth
from service.api.grpc.limits import MessageSizeGuard
from service.api.keys import KeyFile
from service.observability.logs import RequestLog
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry

KEY = "bench-key"


async def calls_per_second(target: str, seconds: float, concurrency: int, metadata: Sequence[tuple[str, str]]) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        request = health_pb2.HealthCheckRequest()
        await check(request, metadata=metadata)  # connected before the clock starts
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await check(request, metadata=metadata)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def in_process(chain: list[grpc.aio.ServerInterceptor], seconds: float, concurrency: int) -> float:
    server = grpc.aio.server(interceptors=chain)
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(lambda: True, []), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await calls_per_second(f"127.0.0.1:{port}", seconds, concurrency, (("x-api-key", KEY),))
    finally:
        await server.stop(0)


def chains(keys: KeyFile) -> dict[str, list[grpc.aio.ServerInterceptor]]:
    from prometheus_client import CollectorRegistry

    failures = Metrics(CollectorRegistry()).auth_failures
    # Health is normally exempt from the access log and the keys; here it is not, to measure them.
    return {
        "no interceptor": [],
        "size check": [MessageSizeGuard(64 * 1024 * 1024)],
        "keys + access log + size check, three interceptors (before issue 13)": [
            ApiKeyInterceptor(keys, frozenset(), failures),
            AccessLog(Telemetry(RequestLog(enabled=False)), frozenset()),
            MessageSizeGuard(64 * 1024 * 1024),
        ],
        "keys + access log + size check, one interceptor (the server's)": [
            AccessLog(
                Telemetry(RequestLog(enabled=False)),
                frozenset(),
                64 * 1024 * 1024,
                ApiKeyGate(keys, frozenset(), failures),
            ),
        ],
    }


class _Details:
    """What grpc hands an interceptor: the method and the metadata."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _no_op_handler() -> Any:
    """A unary method that parses a health request and does nothing: only the wrapping around it is measured."""

    async def behaviour(request: health_pb2.HealthCheckRequest, context: object) -> None:
        return None

    return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=health_pb2.HealthCheckRequest.FromString)


async def size_check_cost(calls: int) -> tuple[float, float]:
    """Microseconds of CPU per call through a method's deserializer and behaviour, without and with the size
    check around them (a no-op behaviour, so that only the wrapping is measured)."""

    plain = _no_op_handler()

    async def continuation(_details: object) -> Any:
        return plain

    guarded = await MessageSizeGuard(64 * 1024 * 1024).intercept_service(continuation, _Details("/m/M"))  # type: ignore[arg-type]
    assert guarded is not None
    data = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService").SerializeToString()
    costs = []
    for handler in (plain, guarded):
        parse, run = handler.request_deserializer, handler.unary_unary
        assert parse is not None and run is not None
        started = time.process_time()
        for _ in range(calls):
            await run(parse(data), cast(Any, None))
        costs.append((time.process_time() - started) / calls * 1e6)
    return costs[0], costs[1]


class _Context:
    """The little of a servicer context the interceptors read (the call's metadata, its code, trailers)."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", KEY),)

    def set_trailing_metadata(self, _metadata: object) -> None:
        return None

    def code(self) -> None:
        return None


async def chain_cost(chain: list[grpc.aio.ServerInterceptor], calls: int) -> float:
    """Microseconds of CPU per call through the chain's ``intercept_service`` (as grpc.aio runs them, each
    continuing to the next) and the wrapped behaviour, without grpc's own machinery; a no-op behaviour."""

    plain = _no_op_handler()

    async def last(_details: object) -> Any:
        return plain

    def link(interceptor: grpc.aio.ServerInterceptor, following: Any) -> Any:
        return lambda details: interceptor.intercept_service(following, details)

    continuation: Any = last
    for interceptor in reversed(chain):
        continuation = link(interceptor, continuation)
    details = _Details("/tensorflow.serving.PredictionService/Predict")
    details.invocation_metadata = (("x-api-key", KEY),)  # type: ignore[assignment]
    data = health_pb2.HealthCheckRequest(service="x").SerializeToString()
    context = cast(Any, _Context())
    started = time.process_time()
    for _ in range(calls):
        handler = await continuation(details)
        await handler.unary_unary(handler.request_deserializer(data), context)
    return (time.process_time() - started) / calls * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="a running server's gRPC address; unset: in-process comparison")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight on the one channel")
    parser.add_argument("--rounds", type=int, default=2, help="in-process: phases per variant, interleaved")
    parser.add_argument("--micro", action="store_true", help="the size check's CPU per call, without grpc")
    args = parser.parse_args(argv)
    if args.micro:
        for _ in range(args.rounds):
            plain, guarded = asyncio.run(size_check_cost(200_000))
            print(f"per call: {plain:.2f} us plain, {guarded:.2f} us with the size check (+{guarded - plain:.2f} us)")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "keys"
            path.write_text(KEY + "\n")
            variants = chains(KeyFile(path))
            for _ in range(args.rounds):
                for name, chain in variants.items():
                    print(f"{name}: {asyncio.run(chain_cost(chain, 20_000)):.1f} us of CPU per call")
        return
    if args.target:
        rate = asyncio.run(calls_per_second(args.target, args.seconds, args.concurrency, ()))
        print(f"{args.target}: {rate:,.0f} health Check calls/s (concurrency {args.concurrency}, one channel)")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "keys"
        path.write_text(KEY + "\n")
        variants = chains(KeyFile(path))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, chain in variants.items():
                rates[name].append(asyncio.run(in_process(chain, args.seconds, args.concurrency)))
    for name, measured in rates.items():
        print(f"{name:32s} " + "  ".join(f"{rate:8,.0f}" for rate in measured) + "  calls/s")


if __name__ == "__main__":
    main()
