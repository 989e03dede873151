"""How grpc jitters the maximum connection age: the lifetimes of 12 connections opened together to one server with
a 1 s age. grpcio 1.85 draws its +-10% once per server, not per connection: run it twice to see two draws.

    python -m bench.grpc_connection_age
"""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.grpc.health import ReadinessHealth

CONNECTIONS = 12


async def lifetime(port: int) -> float:
    """Seconds from a connection's first answer to the server's GOAWAY taking the channel out of READY."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        await check(health_pb2.HealthCheckRequest())
        started = time.monotonic()
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 10)
        return time.monotonic() - started


async def lifetimes() -> list[float]:
    server = grpc.aio.server(options=[("grpc.max_connection_age_ms", 1000), ("grpc.max_connection_age_grace_ms", 500)])
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(lambda: True, []), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return sorted(await asyncio.gather(*(lifetime(port) for _ in range(CONNECTIONS))))
    finally:
        await server.stop(0)


def main() -> None:
    ages = asyncio.run(lifetimes())
    print(f"{CONNECTIONS} connections, age 1 s: " + " ".join(f"{age:.3f}" for age in ages))


if __name__ == "__main__":
    main()
