"""The bench's gRPC closed loop against the real rtserve process: h2load replays a framed unary call and the run
counts good answers apart from gRPC errors, which h2load alone reports as HTTP 200s (issue 11, point 7).

The skeleton's one service, ``grpc.health.v1.Health/Check``, stands in for the model RPCs: same framing, same
headers, same answer check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from grpc_health.v1 import health_pb2

from apptools import publish, running_server
from bench import grpc_payloads, h2load, servers
from prerequisites import unavailable
from service.repository.local import LocalRepository

CALLS = 400


def test_h2load_replays_health_checks_and_tells_good_answers_from_grpc_errors(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    if shutil.which("h2load") is None:
        unavailable("h2load is absent", "apt-get install nghttp2-client")
    publish(LocalRepository(tmp_path / "models"), "iris", 1, demo_model_dir)
    env = {"RTSERVE_REPOSITORY": str(tmp_path / "models"), "RTSERVE_CACHE_DIR": str(tmp_path / "cache")}
    cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    with running_server(env, tmp_path) as server:
        rtserve = next(spec for spec in servers.SERVERS if spec.name == "rtserve")
        running = servers.Running(rtserve, server.process, server.port, server.log_path, server.grpc_port)
        request = health_pb2.HealthCheckRequest().SerializeToString()
        answer = grpc_payloads.call(server.grpc_port, grpc_payloads.HEALTH_CHECK_METHOD, request)
        assert health_pb2.HealthCheckResponse.FromString(answer).status == health_pb2.HealthCheckResponse.SERVING
        good_size = len(grpc_payloads.frame(answer))

        def replay(message: bytes, name: str) -> dict[str, object]:
            body = tmp_path / f"{name}.body"
            body.write_bytes(grpc_payloads.frame(message))
            method, headers = grpc_payloads.HEALTH_CHECK_METHOD, grpc_payloads.HEADERS
            target = h2load.Replay(running, server.grpc_port, method, body, headers, cpus, good_size)
            return h2load.closed_loop(target, 8, 30.0, calls=CALLS)

        good = replay(request, "check")
        assert (good["requests"], good["ok"], good["error_count"], good["ok_share"]) == (CALLS, CALLS, 0, 1.0)
        assert good["h2load"]["bytes_data"] == CALLS * good_size  # type: ignore[index]

        # An unknown service: NOT_FOUND in the trailers, HTTP 200 to h2load, and no good answer to the bench.
        bad = replay(health_pb2.HealthCheckRequest(service="no.such.Service").SerializeToString(), "unknown")
        assert bad["h2load"]["status_2xx"] == CALLS  # type: ignore[index]
        assert (bad["ok"], bad["error_count"]) == (0, CALLS)
