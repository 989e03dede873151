"""The OpenAPI document describes every route the server answers, with its parameters and request bodies."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest

from fakes import FakeLoader
from prerequisites import shared_path
from service.app import create_app
from service.settings import Settings

TF_PREDICT_BODIES = [
    {"instances": [[5.1, 3.5, 1.4, 0.2]]},
    {"signature_name": "serving_default", "inputs": {"features": [[5.1, 3.5, 1.4, 0.2]]}},
    {"inputs": [[1.0, 2.0]]},
    {"instances": [{"tokens": {"b64": "aGk="}, "ids": [1, 2]}]},
]
TF_EXAMPLES_BODIES = [{"examples": [{"x": 1.0}]}, {"signature_name": "classify", "context": {}, "examples": []}]
V2_BODIES = [
    {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]},
    {
        "id": "42",
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    },
]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("empty")
    app = create_app(Settings(repository=str(root), cache_dir=str(root / "cache")), loader=FakeLoader())
    return app.rest.fastapi.openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]


def request_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_every_path_parameter_is_declared_once(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        in_template = re.findall(r"\{(\w+)\}", path)
        declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert declared == in_template, (method, path)


def test_every_inference_post_declares_its_body(document: dict[str, Any]) -> None:
    posts = [(path, op) for path, method, op in operations(document) if method == "post"]
    assert len(posts) == 11  # 9 TF Serving (3 addressings x 3 methods) + 2 V2
    for path, operation in posts:
        content = operation["requestBody"]["content"]
        assert content["application/json"]["schema"]["type"] == "object", path
        assert operation["responses"]["4XX"]["content"]["application/json"]["schema"]["required"] == ["error"]
        if path.endswith("/infer"):
            assert "application/octet-stream" in content
            assert "Inference-Header-Content-Length" in [p["name"] for p in operation["parameters"]]


@pytest.mark.parametrize(
    ("path", "bodies"),
    [
        ("/v1/models/{model_name}:predict", TF_PREDICT_BODIES),
        ("/v1/models/{model_name}/labels/{label}:classify", TF_EXAMPLES_BODIES),
        ("/v1/models/{model_name}/versions/{version}:regress", TF_EXAMPLES_BODIES),
        ("/v2/models/{model_name}/infer", V2_BODIES),
    ],
)
def test_declared_bodies_accept_what_the_protocols_send(
    document: dict[str, Any], path: str, bodies: list[dict[str, Any]]
) -> None:
    for body in bodies:
        jsonschema.validate(body, request_schema(document, path))


def test_declared_v2_body_matches_the_specification_example(document: dict[str, Any]) -> None:
    spec = shared_path("specs/open_inference_rest.yaml")
    import yaml

    examples = yaml.safe_load(spec.read_text())["components"]["schemas"]["inference_request"]["x-examples"]
    jsonschema.validate(examples["Example 1"], request_schema(document, "/v2/models/{model_name}/infer"))


def test_declared_v2_body_refuses_what_the_protocol_forbids(document: dict[str, Any]) -> None:
    schema = request_schema(document, "/v2/models/{model_name}/infer")
    for body in ({}, {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32"}]}, {"inputs": [{"name": "x"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
