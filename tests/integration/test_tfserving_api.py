"""TF Serving REST API on real TensorFlow models, in-process with the model manager running."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from apptools import publish, running_app, wait_until
from service.repository.local import LocalRepository
from service.settings import Settings

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    multi_signature_model_dir: Path,
    classify_regress_model_dir: Path,
    keras_model_dir: Path,
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("repo")
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "iris", 2, demo_model_dir)
    publish(repository, "multi", 1, multi_signature_model_dir)
    publish(repository, "examples", 1, classify_regress_model_dir)
    publish(repository, "keras", 1, keras_model_dir)
    repository.write_model_file("iris", "serving.json", b'{"default": 1, "labels": {"stable": 1, "canary": 2}}')
    settings = Settings(
        repository=str(root),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        models=["iris", "multi", "examples", "keras"],
        version_policy="all",
        poll_interval_s=0.5,
    )
    with running_app(settings) as test_client:
        # Ready means every model has a version (TF Serving's rule too); iris 2 may still be loading then.
        wait_until(lambda: iris_states(test_client) == ["AVAILABLE", "AVAILABLE"], what="both iris versions")
        yield test_client


def iris_states(client: TestClient) -> list[str]:
    return [status["state"] for status in client.get("/v1/models/iris").json()["model_version_status"]]


def test_model_status_lists_every_version(client: TestClient) -> None:
    response = client.get("/v1/models/iris")
    assert response.status_code == 200
    statuses = response.json()["model_version_status"]
    assert {s["version"] for s in statuses} == {"1", "2"}
    for status in statuses:
        assert status["state"] == "AVAILABLE"
        assert status["status"] == {"error_code": "OK", "error_message": ""}


def test_model_status_of_one_version_and_label(client: TestClient) -> None:
    assert [s["version"] for s in client.get("/v1/models/iris/versions/2").json()["model_version_status"]] == ["2"]
    by_label = client.get("/v1/models/iris/labels/canary").json()["model_version_status"]
    assert [s["version"] for s in by_label] == ["2"]
    missing = client.get("/v1/models/iris/versions/7")
    assert missing.status_code == 404
    assert "7" in missing.json()["error"]
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/v1/models/iris/versions/abc").status_code == 400


def test_metadata_describes_signatures(client: TestClient) -> None:
    response = client.get("/v1/models/iris/versions/1/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    features = default["inputs"]["features"]
    assert features["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in features["tensor_shape"]["dim"]] == ["-1", "4"]
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"


def test_predict_row_format_answers_the_iris_class(client: TestClient) -> None:
    response = client.post("/v1/models/iris:predict", json={"instances": [SETOSA, VIRGINICA]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1"  # serving.json's default, not the newest
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (2, 3)
    assert list(predictions.argmax(axis=1)) == [0, 2]
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_columnar_format_and_version_and_label_addressing(client: TestClient) -> None:
    response = client.post("/v1/models/iris/versions/2:predict", json={"inputs": {"features": [VIRGINICA]}})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "2"
    outputs = np.array(response.json()["outputs"])
    assert outputs.shape == (1, 3)
    assert outputs.argmax() == 2
    labelled = client.post("/v1/models/iris/labels/canary:predict", json={"instances": [SETOSA]})
    assert labelled.status_code == 200
    assert labelled.headers["X-Model-Version"] == "2"
    unknown_label = client.post("/v1/models/iris/labels/nope:predict", json={"instances": [SETOSA]})
    assert unknown_label.status_code == 400  # INVALID_ARGUMENT in TF Serving (server_core.cc)
    assert unknown_label.json() == {"error": "Unrecognized servable version label: nope"}


def test_keras_model_predicts(client: TestClient) -> None:
    response = client.post("/v1/models/keras:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.status_code == 200, response.text
    prediction = np.array(response.json()["predictions"])
    assert prediction.shape == (1, 3)
    np.testing.assert_allclose(prediction.sum(), 1.0, rtol=1e-5)


def test_multi_input_int64_and_string_rows_with_b64(client: TestClient) -> None:
    body = {
        "instances": [
            {"ids": [1, 2, 3], "tokens": "ab"},
            {"ids": [10, 20, 30], "tokens": {"b64": base64.b64encode("héllo".encode()).decode()}},
        ]
    }
    response = client.post("/v1/models/multi:predict", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["total"] for p in predictions] == [6, 60]
    assert [p["lengths"] for p in predictions] == [2, len("héllo".encode())]
    assert predictions[0]["upper"] == "AB"


def test_second_signature_by_name_with_bool_and_float64(client: TestClient) -> None:
    body = {"signature_name": "scale", "inputs": {"x": [[1.0, 2.0], [3.0, 4.0]], "flag": [True, False]}}
    response = client.post("/v1/models/multi:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [[2.0, 4.0], [3.0, 4.0]]
    unknown = client.post("/v1/models/multi:predict", json={"signature_name": "nope", "inputs": {"x": [[1.0]]}})
    assert unknown.status_code == 400
    assert "nope" in unknown.json()["error"]


def test_classify_the_demo_model_with_examples(client: TestClient) -> None:
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    examples = [dict(zip(names, SETOSA, strict=True)), dict(zip(names, VIRGINICA, strict=True))]
    body = {"signature_name": "classify", "examples": examples}
    response = client.post("/v1/models/iris:classify", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    best = [max(pairs, key=lambda pair: pair[1])[0] for pairs in results]
    assert best == ["setosa", "virginica"]


def test_classify_and_regress_signatures(client: TestClient) -> None:
    classify = client.post(
        "/v1/models/examples:classify",
        json={"signature_name": "classify", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    regress = client.post(
        "/v1/models/examples:regress",
        json={"signature_name": "regress", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    assert classify.status_code == 200, classify.text
    assert len(classify.json()["results"]) == 2
    assert regress.status_code == 200, regress.text
    assert len(regress.json()["results"]) == 2
    wrong_method = client.post("/v1/models/iris:regress", json={"examples": [{"x": 1.0}]})
    assert wrong_method.status_code == 400
    assert "method" in wrong_method.json()["error"]


def test_framework_routes_answer_like_the_fast_lane(client: TestClient) -> None:
    """The inference POSTs are also FastAPI routes (documented in OpenAPI) and give the same answers there."""
    lane = client.app
    framework = TestClient(lane.fastapi)  # type: ignore[attr-defined]  # no lifespan: shares the running manager
    body = {"instances": [SETOSA]}
    through_lane = client.post("/v1/models/iris:predict", json=body)
    through_framework = framework.post("/v1/models/iris:predict", json=body)
    assert through_framework.status_code == through_lane.status_code == 200
    assert through_framework.json() == through_lane.json()
    assert through_framework.headers["X-Model-Version"] == "1"
    bad = framework.post("/v1/models/iris:predict", content=b"{")
    assert bad.status_code == 400
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/models/{model_name}:predict",
        "/v1/models/{model_name}/labels/{label}:classify",
        "/v2/models/{model_name}/infer",
        "/v2/health/ready",
    ):
        assert path in paths
