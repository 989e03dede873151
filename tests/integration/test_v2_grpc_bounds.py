"""V2 gRPC bounds against the real server process: the gRPC deadline and the `timeout` parameter take a queued
request out of the queue (DEADLINE_EXCEEDED), and one ModelStreamInfer stream holds at most
RTSERVE_GRPC__STREAM_WINDOW requests in work.

``limits`` (modelfactory.batch_limits_module) holds the inference thread while a request carrying GATE_VALUE waits
for the test's release file, so what is queued is decided by the test, not by timing.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from apptools import ServerProcess, publish, running_server, wait_until
from modelfactory import GATE_VALUE, batch_limits_module
from service.repository.local import LocalRepository

WINDOW = 4


@dataclass
class Served:
    server: ServerProcess
    release: Path

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.server.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def hold(self, client: triton.InferenceServerClient, pool: ThreadPoolExecutor) -> Any:
        """Occupy the limits model's inference thread until ``open_gate()``; returns the held call."""
        self.release.unlink(missing_ok=True)
        started = self.metric("rtserve_queue_wait_seconds_count", model_name="limits")
        held = pool.submit(client.infer, "limits", [values(GATE_VALUE)])
        wait_until(
            lambda: self.metric("rtserve_queue_wait_seconds_count", model_name="limits") > started,
            30,
            what="the gated call",
        )
        return held

    def open_gate(self) -> None:
        self.release.write_text("go")


def values(*xs: float) -> triton.InferInput:
    array = np.array(xs, dtype=np.float32)
    tensor = triton.InferInput("x", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("v2-grpc-bounds")
    release = folder / "release"
    root = folder / "models"
    publish(LocalRepository(root), "limits", 1, batch_limits_module(folder / "build" / "limits" / "1", str(release)))
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_ALLOWED_FILE_OPS": "MatchingFiles",  # the limits model's gate
        "RTSERVE_GRPC__STREAM_WINDOW": str(WINDOW),
        "RTSERVE_BATCHING__MAX_BATCH_SIZE": "1",  # each queued request is one queue entry until the gate opens
    }
    with running_server(env, folder) as server:
        try:
            yield Served(server, release)
        finally:
            release.write_text("go")  # whatever a failed test left held


@pytest.fixture
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=served.server.grpc_target)
    yield client
    client.close()


def test_the_grpc_deadline_takes_a_queued_request_out(served: Served, client: triton.InferenceServerClient) -> None:
    dropped = served.metric("rtserve_requests_dropped_total", model_name="limits")
    with ThreadPoolExecutor(2) as pool:
        held = served.hold(client, pool)
        try:
            with pytest.raises(InferenceServerException, match="DEADLINE_EXCEEDED"):
                client.infer("limits", [values(1.0)], client_timeout=1.0)  # the gRPC deadline
            # The server's own deadline answer: the `timeout` parameter (microseconds), shorter than any gRPC one.
            with pytest.raises(InferenceServerException, match=r"DEADLINE_EXCEEDED.*deadline passed while waiting"):
                client.infer("limits", [values(2.0)], timeout=500_000, client_timeout=30)
            wait_until(
                lambda: served.metric("rtserve_requests_dropped_total", model_name="limits") >= dropped + 2,
                30,
                what="both expired requests to leave the queue",
            )
            assert served.metric("rtserve_queue_depth", model_name="limits") == 0
        finally:
            served.open_gate()
        assert held.result(timeout=30).as_numpy("y").tolist() == [GATE_VALUE * 2]
    assert client.infer("limits", [values(3.0)]).as_numpy("y").tolist() == [6.0]


def test_a_stream_holds_at_most_its_window(served: Served, client: triton.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    sent = 5 * WINDOW
    with ThreadPoolExecutor(2) as pool:
        held = served.hold(client, pool)
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for k in range(sent):
                client.async_stream_infer("limits", [values(float(k))], request_id=str(k))
            wait_until(
                lambda: served.metric("rtserve_queue_depth", model_name="limits") == WINDOW,
                30,
                what="the stream's window to fill the queue",
            )
            inflight = served.metric("rtserve_inflight_requests", protocol="grpc-v2")
            # The held unary call and the stream's window; the other requests wait unread in the stream.
            assert inflight == WINDOW + 1
            assert served.metric("rtserve_queue_depth", model_name="limits") == WINDOW
            served.open_gate()
            got = [answers.get(timeout=60) for _ in range(sent)]
        finally:
            served.open_gate()
            client.stop_stream()
        held.result(timeout=30)
    for k, (result, error) in enumerate(got):
        assert error is None, error
        assert result.get_response().id == str(k)
        assert result.as_numpy("y").tolist() == [2.0 * k]


def test_stream_window_is_a_setting() -> None:
    from service.settings import Settings

    assert Settings().grpc.stream_window == 16
    with pytest.raises(ValueError, match="stream_window"):
        Settings(grpc={"stream_window": 0})
