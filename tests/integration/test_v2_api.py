"""Open Inference Protocol REST on real TensorFlow models, in-process with the model manager running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from apptools import publish, running_app
from service.repository.local import LocalRepository
from service.settings import Settings


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, multi_signature_model_dir: Path
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("repo")
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "multi", 3, multi_signature_model_dir)
    settings = Settings(repository=str(root), cache_dir=str(tmp_path_factory.mktemp("cache")), poll_interval_s=0.5)
    with running_app(settings) as test_client:
        yield test_client


def test_server_metadata_and_health(client: TestClient) -> None:
    metadata = client.get("/v2").json()
    assert metadata["name"] == "rtserve"
    assert isinstance(metadata["extensions"], list)
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_model_metadata_and_readiness(client: TestClient) -> None:
    metadata = client.get("/v2/models/iris").json()
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get("/v2/models/iris/versions/1").status_code == 200
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert client.get("/v2/models/iris/versions/1/ready").status_code == 200
    not_ready = client.get("/v2/models/iris/versions/5/ready")
    assert not_ready.status_code == 400
    assert not_ready.json()["ready"] is False
    assert client.get("/v2/models/nope/ready").status_code == 400
    assert client.get("/v2/models/nope").status_code == 404


def test_infer_fp32(client: TestClient) -> None:
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": "features",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
            }
        ],
    }
    response = client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1"
    answer = response.json()
    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-1"
    (output,) = answer["outputs"]
    assert output["name"] == "probabilities"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [2, 3]
    probabilities = np.array(output["data"]).reshape(2, 3)
    assert list(probabilities.argmax(axis=1)) == [0, 2]


def test_infer_int64_and_bytes_with_requested_outputs(client: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]},
            {"name": "tokens", "shape": [2], "datatype": "BYTES", "data": ["ab", "xyz"]},
        ],
        "outputs": [{"name": "total"}, {"name": "upper"}],
    }
    response = client.post("/v2/models/multi/versions/3/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs) == {"total", "upper"}
    assert outputs["total"]["datatype"] == "INT64"
    assert outputs["total"]["data"] == [3, 7]
    assert outputs["upper"]["datatype"] == "BYTES"
    assert outputs["upper"]["data"] == ["AB", "XYZ"]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "FP64"),
        ([{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}], "shape"),
        ([{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "shape"),
        ([{"name": "other", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "other"),
        ([{"name": "features", "shape": [1, 4], "datatype": "NOPE", "data": [1, 2, 3, 4]}], "NOPE"),
    ],
)
def test_bad_infer_requests_get_400_naming_the_problem(
    client: TestClient, inputs: list[dict[str, object]], needle: str
) -> None:
    response = client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
