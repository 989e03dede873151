"""Batching in the real app on a real TensorFlow model: concurrent requests share model calls and each gets its
own answer; a full queue answers 503 with Retry-After; a request deadline answers 504 and the queued request
never runs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from apptools import publish, running_app, wait_until
from service.repository.local import LocalRepository
from service.runtime.base import Servable
from service.runtime.tensorflow import TensorFlowLoader
from service.settings import Settings
from service.tensors import SignatureSpec

IRIS = {"model_name": "iris", "model_version": "1"}
SETOSA = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def repository_root(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("repo")
    publish(LocalRepository(root), "iris", 1, demo_model_dir)
    return root


def settings(root: Path, cache: Path, **overrides: Any) -> Settings:
    return Settings(repository=str(root), cache_dir=str(cache), models=["iris"], **overrides)


def predict(client: TestClient, features: np.ndarray, v2: bool) -> tuple[int, np.ndarray]:
    """One prediction through either protocol: (status, probabilities)."""
    if v2:
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(features.shape)}]}
        body["inputs"][0]["data"] = features.ravel().tolist()
        response = client.post("/v2/models/iris/infer", json=body)
        data = response.json()["outputs"][0]["data"] if response.status_code == 200 else []
    else:
        response = client.post("/v1/models/iris:predict", json={"instances": features.tolist()})
        data = response.json()["predictions"] if response.status_code == 200 else []
    return response.status_code, np.asarray(data, np.float32).reshape(-1, 3)


def metric_samples(client: TestClient, name: str) -> list[tuple[str, Mapping[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(name)
    ]


def iris_value(client: TestClient, name: str, **labels: str) -> float:
    wanted = {**IRIS, **labels}
    for sample_name, sample_labels, value in metric_samples(client, name):
        if sample_name == name and all(sample_labels.get(k) == v for k, v in wanted.items()):
            return value
    return 0.0


def merged_calls(client: TestClient) -> float:
    """Model calls of iris that served more than one request, from rtserve_batch_size."""
    total = iris_value(client, "rtserve_batch_size_count")
    return total - iris_value(client, "rtserve_batch_size_bucket", le="1.0")


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(repository_root: Path, tmp_path: Path) -> None:
    batching = {"max_batch_size": 32, "batch_timeout_us": 20_000}
    rng = np.random.default_rng(7)
    payloads = [rng.uniform(0.1, 8.0, size=(1 + i % 3, 4)).astype(np.float32) for i in range(48)]
    with running_app(settings(repository_root, tmp_path / "cache", batching=batching)) as client:
        # One at a time, each request is a model call of its own: the reference answers.
        expected = [predict(client, x, v2=False)[1] for x in payloads]
        assert merged_calls(client) == 0
        with ThreadPoolExecutor(16) as pool:
            for _ in range(5):  # a few bursts at most; one is nearly always enough
                answers = list(pool.map(lambda i: predict(client, payloads[i], v2=i % 2 == 1), range(len(payloads))))
                for (status, got), want in zip(answers, expected, strict=True):
                    assert status == 200
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                if merged_calls(client) > 0:
                    break
        assert merged_calls(client) > 0, "concurrent requests never shared a model call"
        assert iris_value(client, "rtserve_queue_wait_seconds_count") >= 2 * len(payloads)


class GatedServable:
    """A real TensorFlow servable whose calls can be held, so that a test decides when the queue fills."""

    def __init__(self, inner: Servable) -> None:
        self._inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._inner.signatures

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(30), "the test never released the model"
        return self._inner.run(signature, inputs)

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        self._inner.warm_up(batch_sizes)

    def close(self) -> None:
        self._inner.close()


class GatedLoader:
    def __init__(self) -> None:
        self.servables: list[GatedServable] = []

    def __call__(self, path: Path) -> GatedServable:
        servable = GatedServable(TensorFlowLoader()(path))
        self.servables.append(servable)
        return servable


def test_a_full_queue_answers_503_with_retry_after(repository_root: Path, tmp_path: Path) -> None:
    loader = GatedLoader()
    batching = {"max_queue": 1, "retry_after_s": 2}
    with running_app(settings(repository_root, tmp_path / "cache", batching=batching), loader=loader) as client:
        servable = loader.servables[0]
        servable.calls = 0  # the load-time batch-safety check ran it too
        servable.hold()
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(predict, client, np.array(SETOSA, np.float32), False)
            assert servable.entered.wait(10)
            queued = pool.submit(predict, client, np.array(SETOSA, np.float32), True)
            wait_until(lambda: iris_value(client, "rtserve_queue_depth") == 1, 10, what="a queued request")
            for path, body in (
                ("/v1/models/iris:predict", {"instances": SETOSA}),
                (
                    "/v2/models/iris/infer",
                    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": SETOSA[0]}]},
                ),
            ):
                refused = client.post(path, json=body)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "2"
                assert "overloaded" in refused.json()["error"]
            servable.gate.set()
            assert running.result(30)[0] == 200
            assert queued.result(30)[0] == 200
        assert servable.calls == 2
        refusals = sum(
            value
            for name, labels, value in metric_samples(client, "rtserve_requests_total")
            if labels.get("model_name") == "iris" and labels.get("code") == "503"
        )
        assert refusals == 2


def test_request_timeout_answers_504_and_the_queued_request_never_runs(repository_root: Path, tmp_path: Path) -> None:
    loader = GatedLoader()
    with running_app(settings(repository_root, tmp_path / "cache", request_timeout_s=0.3), loader=loader) as client:
        servable = loader.servables[0]
        servable.calls = 0  # the load-time batch-safety check ran it too
        servable.hold()
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(predict, client, np.array(SETOSA, np.float32), False)
            assert servable.entered.wait(10)
            queued = client.post("/v1/models/iris:predict", json={"instances": SETOSA})
            assert queued.status_code == 504  # answered while the model is still held
            assert "deadline" in queued.json()["error"]
            servable.gate.set()
            assert running.result(30)[0] == 504  # its deadline passed during its call: the answer came late
        # The queue is FIFO: once a new request is answered, the expired one has been dropped, not run.
        assert predict(client, np.array(SETOSA, np.float32), True)[0] == 200
        assert servable.calls == 2
