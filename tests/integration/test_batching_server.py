"""Batching against the real server process, over real sockets: a model whose rows depend on each other is never
merged and answers every request as alone; a failing merged call fails only its culprit (RESOURCE_EXHAUSTED as
429); a request whose client disconnected leaves the queue and is counted as 499; client deadlines answer 504.

``limits`` (modelfactory.batch_limits_module) holds the inference thread while a request carrying GATE_VALUE waits
for the test's release file, so which requests queue together is decided by the test, not by timing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apptools import ServerProcess, publish, running_server, wait_until
from modelfactory import GATE_VALUE, OOM_ABOVE, ROWWISE_KERNEL, batch_limits_module
from service.repository.local import LocalRepository


@dataclass
class Served:
    server: ServerProcess
    release: Path  # while this file is missing, a request carrying GATE_VALUE holds the limits model

    @property
    def url(self) -> str:
        return self.server.url

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def limits(self, name: str, **labels: str) -> float:
        return self.metric(name, model_name="limits", **labels)

    def predict(self, model: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/models/{model}:predict", json=body, headers=headers, timeout=60)

    def hold(self, pool: ThreadPoolExecutor, **headers: str) -> Future[httpx.Response]:
        """Occupy the limits model's inference thread until ``open_gate()``; returns the held request."""
        self.release.unlink(missing_ok=True)
        started = self.limits("rtserve_queue_wait_seconds_count")
        held = pool.submit(self.predict, "limits", {"instances": [GATE_VALUE]}, **headers)
        wait_until(lambda: self.limits("rtserve_queue_wait_seconds_count") > started, 30, what="the gated call")
        return held

    def queued(self, count: int) -> Callable[[], bool]:
        return lambda: self.limits("rtserve_queue_depth") == count

    def open_gate(self) -> None:
        self.release.write_text("go")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, batch_mixing_model_dir: Path, demo_model_dir: Path
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("batching-server")
    release = folder / "release"
    root = folder / "models"
    repository = LocalRepository(root)
    publish(repository, "mixing", 1, batch_mixing_model_dir)
    publish(repository, "limits", 1, batch_limits_module(folder / "build" / "limits" / "1", str(release)))
    publish(repository, "iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_ALLOWED_FILE_OPS": "MatchingFiles",  # the limits model's gate
        "RTSERVE_BATCHING__BATCH_TIMEOUT_US": "20000",
        "RTSERVE_LOG_REQUESTS": "false",
    }
    with running_server(env, folder) as server:
        try:
            yield Served(server, release)
        finally:
            release.write_text("go")  # whatever a failed test left held


def softmax_over_rows(x: np.ndarray) -> np.ndarray:
    exp = np.exp(x - x.max(axis=0))
    return exp / exp.sum(axis=0)


def test_a_model_that_mixes_rows_is_never_merged_and_answers_each_request_as_alone(served: Served) -> None:
    rng = np.random.default_rng(11)
    payloads = [rng.normal(size=(1 + i % 3, 3)).astype(np.float32) for i in range(32)]

    def call(i: int) -> tuple[str, np.ndarray, np.ndarray]:
        signature = "rowwise" if i % 2 else "serving_default"
        body = {"signature_name": signature, "instances": payloads[i // 2].tolist()}
        response = served.predict("mixing", body)
        assert response.status_code == 200, response.text
        return signature, payloads[i // 2], np.asarray(response.json()["predictions"], np.float32)

    def merged_calls() -> float:
        return served.metric("rtserve_batch_size_count", model_name="mixing") - served.metric(
            "rtserve_batch_size_bucket", model_name="mixing", le="1.0"
        )

    with ThreadPoolExecutor(16) as pool:
        for _ in range(5):  # until the row-wise requests have shared a call: the load did merge what it may
            for signature, x, got in pool.map(call, range(2 * len(payloads))):
                want = softmax_over_rows(x) if signature == "serving_default" else x @ ROWWISE_KERNEL
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            if merged_calls() > 0:
                break
    assert merged_calls() > 0, "concurrent row-wise requests never shared a model call"
    metadata = httpx.get(served.url + "/v2/models/mixing", timeout=10).json()["parameters"]
    assert metadata["rtserve.batching.serving_default"].startswith("alone (unsafe): ")
    assert metadata["rtserve.batching.rowwise"].startswith("batched (safe): ")
    assert served.metric("rtserve_batching_merged", model_name="mixing", signature="serving_default") == 0
    assert served.metric("rtserve_batching_merged", model_name="mixing", signature="rowwise", basis="safe") == 1
    iris = httpx.get(served.url + "/v2/models/iris", timeout=10).json()["parameters"]
    assert iris["rtserve.batching.serving_default"].startswith("batched (safe): ")


def test_a_failing_merged_call_fails_only_its_culprit_with_429(served: Served) -> None:
    calls = served.limits("rtserve_inference_duration_seconds_count")
    with ThreadPoolExecutor(3) as pool:
        held = served.hold(pool)
        culprit = pool.submit(served.predict, "limits", {"instances": [OOM_ABOVE * 5]})
        innocent = pool.submit(served.predict, "limits", {"instances": [1.0, 2.0]})
        wait_until(served.queued(2), 30, what="two queued requests")
        served.open_gate()
        assert held.result(60).json() == {"predictions": [GATE_VALUE * 2]}
        refused, answered = culprit.result(60), innocent.result(60)
    assert answered.status_code == 200 and answered.json() == {"predictions": [2.0, 4.0]}
    assert refused.status_code == 429, refused.text
    assert "OOM" in refused.json()["error"] and len(refused.text) < 1000
    # The held call, the merged call that failed, then each of its two requests alone.
    assert served.limits("rtserve_inference_duration_seconds_count") - calls == 4
    # Alone too, RESOURCE_EXHAUSTED is a 429 (too much asked at once), not the server's fault.
    assert served.predict("limits", {"instances": [OOM_ABOVE * 5]}).status_code == 429


def raw_request(port: int, body: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /v1/models/limits:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body)
    return connection


def test_a_request_whose_client_disconnected_never_runs_and_counts_as_499(served: Served) -> None:
    ran = served.limits("rtserve_batch_size_sum")
    gone_before = served.limits("rtserve_requests_total", code="499")
    ok_before = served.limits("rtserve_requests_total", code="200")
    with ThreadPoolExecutor(2) as pool:
        held = served.hold(pool)
        connection = raw_request(served.server.port, b'{"instances": [7.0]}')
        wait_until(served.queued(1), 30, what="the raw request to queue")
        connection.close()  # the client goes away while its request waits
        wait_until(served.queued(0), 30, what="the abandoned request to leave the queue")
        waiting = pool.submit(served.predict, "limits", {"instances": [3.0]})
        wait_until(served.queued(1), 30, what="a real request behind the held one")
        served.open_gate()
        assert held.result(60).status_code == 200
        assert waiting.result(60).json() == {"predictions": [6.0]}
    assert served.limits("rtserve_batch_size_sum") - ran == 2  # the held request and the real one only
    wait_until(lambda: served.limits("rtserve_requests_total", code="499") - gone_before == 1, 10, what="a 499")
    assert served.limits("rtserve_requests_total", code="200") - ok_before == 2
    assert served.limits("rtserve_requests_dropped_total", reason="cancelled") >= 1


def test_a_client_gone_while_sending_its_body_counts_as_499_not_400(served: Served) -> None:
    gone_before = served.limits("rtserve_requests_total", code="499")
    bad_before = served.limits("rtserve_requests_total", code="400")
    connection = socket.create_connection(("127.0.0.1", served.server.port), timeout=10)
    head = "POST /v1/models/limits:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
    connection.sendall(head.encode() + b'{"instances": [1.0, ')
    wait_until(lambda: served.metric("rtserve_inflight_requests") >= 1, 30, what="the request to start")
    connection.close()
    wait_until(lambda: served.limits("rtserve_requests_total", code="499") - gone_before == 1, 30, what="a 499")
    assert served.limits("rtserve_requests_total", code="400") == bad_before


def test_client_deadlines_answer_504_queued_or_running(served: Served) -> None:
    ran = served.limits("rtserve_batch_size_sum")
    with ThreadPoolExecutor(2) as pool:
        held = served.hold(pool, **{"X-Request-Timeout-Ms": "3000"})
        v2 = {"parameters": {"timeout": 300_000}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}
        v2["inputs"][0]["data"] = [5.0]
        queued = httpx.post(served.url + "/v2/models/limits/infer", json=v2, timeout=30)
        assert queued.status_code == 504, queued.text  # dropped at its deadline, the model still held
        assert "deadline" in queued.json()["error"]
        running = held.result(30)
        assert running.status_code == 504, running.text  # answered at its deadline, not when the call returned
        served.open_gate()
    wait_until(served.queued(0), 30, what="an empty queue")
    assert served.predict("limits", {"instances": [1.0]}).status_code == 200
    assert served.limits("rtserve_batch_size_sum") - ran == 2  # the held one ran (too late), the queued one never


@pytest.mark.parametrize(
    ("headers", "body", "named"),
    [
        ({"X-Request-Timeout-Ms": "soon"}, {"instances": [1.0]}, "X-Request-Timeout-Ms"),
        ({"X-Request-Timeout-Ms": "-5"}, {"instances": [1.0]}, "X-Request-Timeout-Ms"),
        ({"X-Request-Timeout-Ms": "1e12"}, {"instances": [1.0]}, "X-Request-Timeout-Ms"),
    ],
)
def test_a_malformed_client_deadline_is_a_400(served: Served, headers: dict[str, str], body: Any, named: str) -> None:
    response = served.predict("limits", body, **headers)
    assert response.status_code == 400
    assert named.lower() in response.json()["error"].lower()


@pytest.mark.parametrize("timeout", ["soon", -1, 0, True, 1e30])
def test_a_malformed_v2_timeout_parameter_is_a_400(served: Served, timeout: Any) -> None:
    body = {
        "parameters": {"timeout": timeout},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
    }
    response = httpx.post(served.url + "/v2/models/limits/infer", json=body, timeout=30)
    assert response.status_code == 400
    assert "parameter 'timeout'" in response.json()["error"]


def test_a_grpc_deadline_takes_a_queued_request_out_unrun(served: Served) -> None:
    # TF Serving's gRPC API: the client's deadline is the batch entry's; past it the request leaves the queue
    # while the model is still held, and never runs.
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    ran = served.limits("rtserve_batch_size_sum")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "limits"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([5.0], np.float32)))
    with ThreadPoolExecutor(1) as pool, grpc.insecure_channel(served.server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        held = served.hold(pool)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, 0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(served.queued(0), 30, what="the expired request out of the queue")
        served.open_gate()
        assert held.result(30).status_code == 200
        answer = stub.Predict(request, 30)
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [10.0]
    assert served.limits("rtserve_batch_size_sum") - ran == 2  # the held one and the last one; the expired one never
