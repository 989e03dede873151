"""Malformed requests: each gets a 4xx whose message names the problem, and the server keeps serving."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apptools import publish, running_app
from service.repository.local import LocalRepository
from service.settings import Settings

MAX_BODY = 256 * 1024
GOOD = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("repo")
    publish(LocalRepository(root), "iris", 1, demo_model_dir)
    settings = Settings(
        repository=str(root),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        max_body_bytes=MAX_BODY,
        max_tensor_elements=10_000,
        poll_interval_s=0.5,
    )
    with running_app(settings) as test_client:
        yield test_client


PREDICT = "/v1/models/iris:predict"
INFER = "/v2/models/iris/infer"

# (path, body, expected status, a word the message must contain)
CASES = [
    (PREDICT, b'{"instances": [[1, 2', 400, "JSON"),
    (PREDICT, b"[1, 2, 3]", 400, "object"),
    (PREDICT, b"", 400, "JSON"),
    (PREDICT, b'{"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}', 400, "instances"),
    (PREDICT, b'{"something": 1}', 400, "instances"),
    (PREDICT, b'{"inputs": {"nope": [[1, 2, 3, 4]]}}', 400, "Missing named input: features in 'inputs' object."),
    (PREDICT, b'{"instances": [["a", "b", "c", "d"]]}', 400, "number"),
    (PREDICT, b'{"instances": [[1, 2, 3]]}', 400, "shape"),
    (PREDICT, b'{"instances": [[1, 2, 3, 4], [1, 2]]}', 400, "ragged"),
    (PREDICT, b'{"instances": [[true, false, true, false]]}', 400, "number"),
    (PREDICT, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, ""),
    (PREDICT, b'{"inputs": {"features": ' + b"[" + b"[1,2,3,4]," * 3000 + b"[1,2,3,4]]}}", 400, "elements"),
    ("/v1/models/nope:predict", GOOD, 404, "nope"),
    ("/v1/models/iris/versions/9:predict", GOOD, 404, "9"),
    ("/v1/models/iris/versions/x1:predict", GOOD, 400, "version"),
    ("/v1/models/iris/labels/nope:predict", GOOD, 400, "Unrecognized servable version label: nope"),
    ("/v1/models/..%2F..%2Fetc%2Fpasswd:predict", GOOD, 404, ""),
    ("/v1/models/%E2%98%83:predict", GOOD, 404, ""),
    (INFER, b'{"inputs": "x"}', 400, "inputs"),
    (
        INFER,
        b'{"inputs": [{"name": "features", "shape": [-1, 4], "datatype": "FP32", "data": []}]}',
        400,
        "shape",
    ),
    (
        INFER,
        b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, "x", 4]}]}',
        400,
        "",
    ),
    (
        INFER,
        b'{"inputs": [{"name": "features", "shape": [1, -4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
        400,
        "shape",
    ),
    ("/v2/models/nope/infer", b'{"inputs": []}', 404, "nope"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), CASES)
def test_malformed_request_gets_4xx_with_message(
    client: TestClient, path: str, body: bytes, status: int, needle: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str)
    assert message
    assert needle.lower() in message.lower()
    assert client.post(PREDICT, content=GOOD).status_code == 200


def test_oversize_body_is_refused_with_413(client: TestClient) -> None:
    big = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 20_000 + b"[1, 2, 3, 4]]}"
    response = client.post(PREDICT, content=big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_oversize_body_without_content_length_is_refused(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(20_000):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1, 2, 3, 4]]}"

    response = client.post(PREDICT, content=chunks())
    assert response.status_code == 413


def test_compressed_body_is_refused_not_inflated(client: TestClient) -> None:
    bomb = gzip.compress(b" " * 50_000_000)  # ~50 KB on the wire, 50 MB if inflated
    response = client.post(PREDICT, content=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 415
    assert "Content-Encoding" in response.json()["error"]


def test_server_is_healthy_after_the_corpus(client: TestClient) -> None:
    for path, body, _, _ in CASES:
        client.post(path, content=body)
    assert client.get("/v2/health/ready").status_code == 200
    response = client.post(PREDICT, content=GOOD)
    assert response.status_code == 200
    metrics = client.get("/metrics").text
    assert 'code="500"' not in metrics
