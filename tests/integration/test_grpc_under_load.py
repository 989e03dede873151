"""gRPC clients through a version swap, a corrupt version and SIGTERM: no accepted request is lost.

The real server process, real TensorFlow models in a local repository, and the clients users run: the
`tensorflow-serving-api` PredictionService stub and `tritonclient`'s gRPC client (V2 ModelInfer), each in its own
thread sending back to back, bounded in count and time. One story in order: version 2 is published under load
(every RPC succeeds; the answering version goes from 1 to 2 and never back), a corrupt version 3 leaves 2 serving,
then SIGTERM under load: health turns NOT_SERVING, every RPC is answered until the shutdown delay is over, then
refused (never cut off: every call the server began ended OK), and the process exits 0.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import tensorflow as tf
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from apptools import running_server, wait_until
from service.repository.local import LocalRepository

SETOSA = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


class RpcClient(threading.Thread):
    """Sends one kind of RPC back to back, recording (status code name, answering version) per call."""

    protocol = ""  # the protocol label its calls are logged under

    def __init__(self, max_calls: int = 4000, max_seconds: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self.results: list[tuple[str, str]] = []
        self.stop = threading.Event()

    def call(self) -> tuple[str, str]:
        raise NotImplementedError

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and len(self.results) < self.max_calls and time.monotonic() < deadline:
            self.results.append(self.call())

    def seen(self, version: str) -> bool:
        return any(v == version for _, v in self.results[-20:])

    def versions(self) -> list[int]:
        return [int(v) for code, v in self.results if code == "OK"]


class TfServingClient(RpcClient):
    """tensorflow.serving.PredictionService/Predict with the official stub and tf.make_tensor_proto."""

    protocol = "grpc-tfserving"

    def __init__(self, target: str, **bounds: float) -> None:
        super().__init__(**bounds)  # type: ignore[arg-type]
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        self._request = predict_pb2.PredictRequest()
        self._request.model_spec.name = "iris"
        self._request.inputs["features"].CopyFrom(tf.make_tensor_proto(SETOSA))

    def call(self) -> tuple[str, str]:
        try:
            response = self._stub.Predict(self._request, timeout=10)
        except grpc.RpcError as error:
            return error.code().name, ""
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        assert probabilities.shape == (1, 3) and int(np.argmax(probabilities)) == 0, probabilities
        return "OK", str(response.model_spec.version.value)


class TritonClient(RpcClient):
    """inference.GRPCInferenceService/ModelInfer with tritonclient (raw input contents, as it always sends)."""

    protocol = "grpc-v2"

    def __init__(self, target: str, **bounds: float) -> None:
        super().__init__(**bounds)  # type: ignore[arg-type]
        self._client = triton.InferenceServerClient(target)
        self._input = triton.InferInput("features", list(SETOSA.shape), "FP32")
        self._input.set_data_from_numpy(SETOSA)

    def call(self) -> tuple[str, str]:
        try:
            result = self._client.infer("iris", [self._input], client_timeout=10)
        except InferenceServerException as error:
            return str(error.status()).removeprefix("StatusCode."), ""
        probabilities = result.as_numpy("probabilities")
        assert probabilities is not None and int(np.argmax(probabilities)) == 0, probabilities
        return "OK", result.get_response().model_version


def version_state(url: str, version: str) -> str:
    statuses = httpx.get(f"{url}/v1/models/iris", timeout=10).json().get("model_version_status", [])
    return next((s["state"] for s in statuses if s["version"] == version), "")


def test_grpc_clients_lose_nothing_through_swap_corrupt_version_and_sigterm(
    demo_model_dir: Path, corrupt_model_dir: Path, tmp_path: Path
) -> None:
    repository = LocalRepository(tmp_path / "models")
    repository.upload_version("iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "models"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.3",
        "RTSERVE_LOAD_RETRY_INITIAL_S": "30",
        "RTSERVE_SHUTDOWN_DELAY_S": "1.5",
        "RTSERVE_DRAIN_TIMEOUT_S": "10",
    }
    with running_server(env, tmp_path) as server:
        clients: list[RpcClient] = [TfServingClient(server.grpc_target), TritonClient(server.grpc_target)]
        for client in clients:
            client.start()
        wait_until(lambda: all(len(c.results) >= 20 for c in clients), 30, what="both gRPC clients to get going")

        # 1. Version 2 arrives under load: every RPC answered, 1 then 2, never back.
        repository.upload_version("iris", 2, demo_model_dir)
        wait_until(lambda: all(c.seen("2") for c in clients), 60, what="version 2 to answer both clients")

        # 2. A corrupt version 3 never replaces 2.
        repository.upload_version("iris", 3, corrupt_model_dir)
        wait_until(lambda: version_state(server.url, "3") == "END", 60, what="version 3 to fail to load")
        calls_at_failure = [len(c.results) for c in clients]
        wait_until(
            lambda: all(len(c.results) >= n + 20 for c, n in zip(clients, calls_at_failure, strict=True)),
            30,
            what="more calls after version 3 failed",
        )
        for client in clients:
            codes = {code for code, _ in client.results}
            versions = client.versions()
            assert codes == {"OK"}, f"{type(client).__name__}: failed RPCs before SIGTERM: {codes}"
            assert versions[0] == 1 and versions[-1] == 2, versions[-5:]
            assert versions == sorted(versions), f"{type(client).__name__}: went back to version 1 after 2 answered"
            name = type(client).__name__
            print(f"{name}: {len(versions)} RPCs, {versions.count(1)} by v1, {versions.count(2)} by v2, 0 failed")

        # 3. SIGTERM under load.
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
        check = health_pb2.HealthCheckRequest(service="")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        before = [len(c.results) for c in clients]
        server.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING,
            1.0,
            0.02,
            what="health NOT_SERVING right after SIGTERM (within the shutdown delay)",
        )
        exit_code = server.process.wait(60)
        for client in clients:
            client.stop.set()
            client.join(30)
        assert exit_code == 0, server.log()
        logged = served_calls(server.log())
        assert {status for _, status in logged} == {200}, "a call the server began did not end OK"
        for client, start in zip(clients, before, strict=True):
            after = client.results[start:]
            answered = [code for code, _ in after if code == "OK"]
            codes = {code for code, _ in after}
            # Answered through the shutdown delay, then refused as a closed server refuses: UNAVAILABLE, or
            # CANCELLED for a call grpc core had received but not yet handed over as it stopped (never run: the
            # server's log has a line for every call it began, all OK, as many as the client's answers).
            assert answered, f"{type(client).__name__}: nothing answered during the shutdown delay"
            assert codes <= {"OK", "UNAVAILABLE", "CANCELLED"}, f"{type(client).__name__}: {codes}"
            first_refusal = next((i for i, (code, _) in enumerate(after) if code != "OK"), len(after))
            assert all(code != "OK" for code, _ in after[first_refusal:]), "answered again after a refusal"
            ok_total = sum(code == "OK" for code, _ in client.results)
            assert ok_total == sum(protocol == client.protocol for protocol, _ in logged), type(client).__name__


def served_calls(log: str) -> list[tuple[str, int]]:
    """(protocol, status) of every model call in the server's access log."""
    calls = []
    for line in log.splitlines():
        if line.startswith("{") and '"logger":"rtserve.access"' in line:
            record = json.loads(line)
            if record.get("protocol", "").startswith("grpc-") and record.get("model"):
                calls.append((record["protocol"], int(record["status"])))
    return calls
