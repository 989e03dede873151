"""Open Inference Protocol conformance with a real client: tritonclient[http] against the real server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from apptools import ServerProcess, publish, running_server
from service.repository.local import LocalRepository


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, multi_signature_model_dir: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "multi", 2, multi_signature_model_dir)
    env = {"RTSERVE_REPOSITORY": str(root), "RTSERVE_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    with running_server(env, tmp_path_factory.mktemp("log")) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("iris", "7")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["name"] == "rtserve"
    metadata = client.get_model_metadata("iris")
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]


def test_infer_fp32_json(client: triton.InferenceServerClient) -> None:
    features = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    tensor = triton.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=False)
    output = triton.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer("iris", [tensor], outputs=[output], request_id="abc")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3)
    assert list(probabilities.argmax(axis=1)) == [0, 2]
    response = result.get_response()
    assert response["model_name"] == "iris"
    assert response["model_version"] == "1"
    assert response["id"] == "abc"


def test_infer_int64_and_bytes_json(client: triton.InferenceServerClient) -> None:
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    tokens = np.array([b"ab", b"xyz"], dtype=np.object_)
    inputs = [triton.InferInput("ids", [2, 2], "INT64"), triton.InferInput("tokens", [2], "BYTES")]
    inputs[0].set_data_from_numpy(ids, binary_data=False)
    inputs[1].set_data_from_numpy(tokens, binary_data=False)
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("total", "upper", "lengths")]
    result = client.infer("multi", inputs, model_version="2", outputs=outputs)
    assert result.as_numpy("total").tolist() == [3, 7]
    assert result.as_numpy("lengths").tolist() == [2, 3]
    assert [bytes(v) if isinstance(v, bytes) else str(v).encode() for v in result.as_numpy("upper")] == [b"AB", b"XYZ"]


def test_errors_reach_the_client_as_exceptions(client: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("features", [1, 4], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64), binary_data=False)
    with pytest.raises(InferenceServerException, match="FP64"):
        client.infer("iris", [wrong])
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("nope")


def test_infer_with_the_binary_tensor_extension(client: triton.InferenceServerClient) -> None:
    features = np.array([[5.1, 3.5, 1.4, 0.2]] * 64, dtype=np.float32)
    tensor = triton.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=True)
    output = triton.InferRequestedOutput("probabilities", binary_data=True)
    result = client.infer("iris", [tensor], outputs=[output])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (64, 3)
    assert probabilities.dtype == np.float32
    assert set(probabilities.argmax(axis=1).tolist()) == {0}
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_binary_bytes_inputs_and_outputs(client: triton.InferenceServerClient) -> None:
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    tokens = np.array([b"ab", b"xyz"], dtype=np.object_)
    inputs = [triton.InferInput("ids", [2, 2], "INT64"), triton.InferInput("tokens", [2], "BYTES")]
    inputs[0].set_data_from_numpy(ids, binary_data=True)
    inputs[1].set_data_from_numpy(tokens, binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in ("total", "upper")]
    result = client.infer("multi", inputs, outputs=outputs)
    assert result.as_numpy("total").tolist() == [3, 7]
    assert result.as_numpy("upper").tolist() == [b"AB", b"XYZ"]
