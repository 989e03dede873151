"""TF Serving's classic test model, half_plus_two (y = x/2 + 2; written by tests/modelfactory.py in TF Serving's
TF2 and TF1 flavours), served by `tensorflow_model_server` exactly as TF Serving's Docker tutorial starts it
(version folder 00000123), and asked what TF Serving's documentation and REST handler tests ask it. The answers
must be TF Serving's documented ones."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from apptools import free_port, running_server, tensorflow_model_server_command

STATUS = {
    "model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


@dataclass(frozen=True)
class Served:
    http: httpx.Client
    grpc_target: str


@pytest.fixture(scope="module")
def served(half_plus_two_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("half_plus_two")
    base = root / "saved_model_half_plus_two"
    shutil.copytree(half_plus_two_dir, base / "00000123")
    rest, grpc = free_port(), free_port()
    command = tensorflow_model_server_command(
        f"--port={grpc}", f"--rest_api_port={rest}", "--model_name=half_plus_two", f"--model_base_path={base}"
    )
    env = {"RTSERVE_CACHE_DIR": str(root / "cache"), "RTSERVE_GRPC_PORT": str(grpc)}
    with (
        running_server(env, root, command=command, port=rest) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield Served(client, f"127.0.0.1:{grpc}")


@pytest.fixture
def http(served: Served) -> httpx.Client:
    return served.http


@pytest.fixture
def flavour(request: pytest.FixtureRequest) -> str:
    """Which half_plus_two the module's server holds: "tf2" or "tf1" (the conftest fixture's parameter)."""
    return str(request.node.callspec.params["half_plus_two_dir"])


def test_predict_row_format(http: httpx.Client) -> None:
    # g3doc/docker.md and api_rest.md
    answer = http.post("/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0, 5.0]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_predict_columnar_format(http: httpx.Client) -> None:
    answer = http.post("/v1/models/half_plus_two:predict", json={"inputs": [1.0, 2.0, 5.0]})
    assert answer.json() == {"outputs": [2.5, 3.0, 4.5]}


def test_predict_by_version(http: httpx.Client) -> None:
    answer = http.post("/v1/models/half_plus_two/versions/123:predict", json={"instances": [4.0]})
    assert answer.json() == {"predictions": [4.0]}


def test_classify(http: httpx.Client) -> None:
    # http_rest_api_handler_test.cc: one example, no classes output -> an empty label with the score
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}
    answer = http.post("/v1/models/half_plus_two:classify", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": [[["", 12.0]]]}


def test_regress(http: httpx.Client) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}, {"x": 1.0}]}
    answer = http.post("/v1/models/half_plus_two:regress", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": [42.0, 2.5]}


def test_model_status_document(http: httpx.Client) -> None:
    assert http.get("/v1/models/half_plus_two").json() == STATUS
    assert http.get("/v1/models/half_plus_two/versions/123").json() == STATUS


def test_model_metadata_document(http: httpx.Client) -> None:
    document = http.get("/v1/models/half_plus_two/metadata").json()
    assert document["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    signature_map = document["metadata"]["signature_def"]
    # TF Serving prints the SignatureDefMap it unpacks from the gRPC answer's Any (http_rest_api_util.cc), not the Any
    assert set(signature_map) == {"signature_def"}
    signatures = signature_map["signature_def"]
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    methods = {name: signature["method_name"] for name, signature in signatures.items()}
    assert methods == {
        "serving_default": "tensorflow/serving/predict",
        "classify_x_to_y": "tensorflow/serving/classify",
        "regress_x_to_y": "tensorflow/serving/regress",
    }
    (x,) = signatures["serving_default"]["inputs"].values()
    assert list(signatures["serving_default"]["inputs"]) == ["x"]
    assert list(signatures["serving_default"]["outputs"]) == ["y"]
    assert x["dtype"] == "DT_FLOAT"
    assert set(x["tensor_shape"]) == {"dim", "unknown_rank"}
    assert list(signatures["classify_x_to_y"]["inputs"]) == ["inputs"]
    assert signatures["classify_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert list(signatures["classify_x_to_y"]["outputs"]) == ["scores"]
    assert list(signatures["regress_x_to_y"]["outputs"]) == ["outputs"]


def test_unknown_version_is_not_found(http: httpx.Client) -> None:
    assert http.get("/v1/models/half_plus_two/versions/7").status_code == 404
    assert http.post("/v1/models/half_plus_two/versions/7:predict", json={"instances": [1.0]}).status_code == 404


def test_unknown_model_error_text_is_tf_servings(http: httpx.Client) -> None:
    # g3doc/api_rest.md's own example of an error, byte for byte in its body
    unknown = http.post("/v1/models/nope:predict", json={"instances": [1.0]})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Servable not found for request: Latest(nope)"}


M = "/v1/models/half_plus_two"
# What TF Serving answers for each bad request, code and text (its sources named; json_tensor.cc quotes the body
# before some of its texts, which rtserve leaves out: service/api/tfserving_errors.py).
ERRORS: dict[str, tuple[str, str, bytes | None, int, str]] = {
    # core/basic_manager.cc, core/manager.h ServableRequest
    "unknown version": ("POST", M + "/versions/7:predict", b'{"instances": [1.0]}', 404,
                        "Servable not found for request: Specific(half_plus_two, 7)"),
    "unknown model metadata": ("GET", "/v1/models/nope/metadata", None, 404,
                               "Servable not found for request: Latest(nope)"),
    "unknown model classify": ("POST", "/v1/models/nope:classify", b'{"examples": [{"x": 1.0}]}', 404,
                               "Servable not found for request: Latest(nope)"),
    # get_model_status_impl.cc
    "unknown model status": ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    "no model name": ("GET", "/v1/models", None, 400, "Missing model name in request."),  # ProcessModelStatusRequest
    "unknown version status": ("GET", M + "/versions/7", None, 404, "Could not find version 7 of model half_plus_two"),
    # server_core.cc GetModelVersionForLabel
    "unknown label": ("POST", M + "/labels/gold:predict", b'{"instances": [1.0]}', 400,
                      "Unrecognized servable version label: gold"),
    "unknown label status": ("GET", M + "/labels/gold", None, 400, "Unrecognized servable version label: gold"),
    # http_rest_api_handler.cc GetInfoMap; classifier.cc / regressor.cc
    "unknown signature": ("POST", M + ":predict", b'{"signature_name": "nope", "instances": [1.0]}', 400,
                          'Serving signature name: "nope" not found in signature def'),
    "unknown classify signature": ("POST", M + ":classify", b'{"signature_name": "nope", "examples": [{"x": 1.0}]}',
                                   400, "No signature was found with the name: nope"),
    "unknown regress signature": ("POST", M + ":regress", b'{"signature_name": "nope", "examples": [{"x": 1.0}]}',
                                  400, "No signature was found with the name: nope"),
    "classify a predict signature": ("POST", M + ":classify", b'{"examples": [{"x": 1.0}]}', 400,
                                     "Expected classification signature method_name to be "
                                     "tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    "regress a classify signature": ("POST", M + ":regress",
                                     b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}', 400,
                                     "Expected regression signature method_name to be "
                                     "tensorflow/serving/regress. Was: tensorflow/serving/classify"),
    # json_tensor.cc ParseJson, FillPredictRequestFromJson, FillClassifyRegressRequestFromJson
    "empty body": ("POST", M + ":predict", b"", 400, "JSON Parse error: The document is empty"),
    "neither instances nor inputs": ("POST", M + ":predict", b'{"signature_name": "serving_default"}', 400,
                                     "Missing 'inputs' or 'instances' key"),
    "both instances and inputs": ("POST", M + ":predict", b'{"instances": [1.0], "inputs": [1.0]}', 400,
                                  "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                                  "to exist"),
    "classify without examples": ("POST", M + ":classify", b'{"signature_name": "classify_x_to_y"}', 400,
                                  "When method is classify, key 'examples' is expected and was not found"),
    "regress without examples": ("POST", M + ":regress", b'{"signature_name": "regress_x_to_y"}', 400,
                                 "When method is classify, key 'examples' is expected and was not found"),
    "instances not a list": ("POST", M + ":predict", b'{"instances": {"x": 1.0}}', 400,
                             "Excepting 'instances' to be an list/array"),
    "no instances": ("POST", M + ":predict", b'{"instances": []}', 400, "No values in 'instances' array"),
    "examples not a list": ("POST", M + ":regress", b'{"signature_name": "regress_x_to_y", "examples": {"x": 1.0}}',
                            400, "Expecting 'examples' value to be an list/array"),
    "missing named input": ("POST", M + ":predict", b'{"inputs": {"z": [1.0]}}', 400,
                            "Missing named input: x in 'inputs' object."),
    "unknown instance key": ("POST", M + ":predict", b'{"instances": [{"z": 1.0}]}', 400,
                             "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
                             "JSON object: does not have named input: z"),
    # http_rest_api_util.cc: the path pattern takes digits only; ParseModelInfo's SimpleAtoi
    "malformed version": ("POST", M + "/versions/abc:predict", b'{"instances": [1.0]}', 400,
                          "Malformed request: POST /v1/models/half_plus_two/versions/abc:predict"),
    "malformed version status": ("GET", M + "/versions/v1", None, 400,
                                 "Malformed request: GET /v1/models/half_plus_two/versions/v1"),
    "version beyond int64": ("GET", M + "/versions/99999999999999999999/metadata", None, 400,
                             "Failed to convert version: 99999999999999999999 to numeric."),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_error_texts_and_codes_are_tf_servings(http: httpx.Client, case: str) -> None:
    method, path, body, status, text = ERRORS[case]
    answer = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (status, {"error": text})
    assert answer.headers["content-type"] == "application/json"


def test_json_that_does_not_parse_says_where(http: httpx.Client) -> None:
    answer = http.post(M + ":predict", content=b'{"instances": [1.0,', headers={"content-type": "application/json"})
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert message.startswith("JSON Parse error: ") and message.endswith(" at offset: 19"), message


def _dim(size: int) -> dict[str, str]:
    return {"size": str(size), "name": ""}


def _tensor(dtype: str, name: str, dims: list[int] | None) -> dict[str, Any]:
    """A TensorInfo as TF Serving prints it; dims None: unknown rank (the TF1 flavour's placeholders)."""
    shape = (
        {"dim": [], "unknown_rank": True} if dims is None else {"dim": [_dim(d) for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}", "defaults": {}}


def expected_metadata(flavour: str) -> dict[str, Any]:
    """GET /v1/models/half_plus_two/metadata as TF Serving answers it (http_rest_api_util.cc ToJsonString: the
    SignatureDefMap unpacked from its Any, proto field names, every field printed)."""
    if flavour == "tf1":  # placeholders of unknown rank, named as TF Serving's own saved_model_half_plus_two.py
        example, x, y = (_tensor(dtype, name, None) for dtype, name in (("DT_STRING", "tf_example:0"),
                         ("DT_FLOAT", "x:0"), ("DT_FLOAT", "y:0")))  # fmt: skip
        signatures = {
            "classify_x_to_y": _signature({"inputs": example}, {"scores": y}, "classify"),
            "regress_x_to_y": _signature({"inputs": example}, {"outputs": y}, "regress"),
            "serving_default": _signature({"x": x}, {"y": y}, "predict"),
        }
    else:  # tf.function signatures with [None] inputs; the classify/regress scores come out [None, 1]
        signatures = {
            "classify_x_to_y": _signature(
                {"inputs": _tensor("DT_STRING", "classify_x_to_y_inputs:0", [-1])},
                {"scores": _tensor("DT_FLOAT", "StatefulPartitionedCall:0", [-1, 1])},
                "classify",
            ),
            "regress_x_to_y": _signature(
                {"inputs": _tensor("DT_STRING", "regress_x_to_y_inputs:0", [-1])},
                {"outputs": _tensor("DT_FLOAT", "StatefulPartitionedCall_1:0", [-1, 1])},
                "regress",
            ),
            "serving_default": _signature(
                {"x": _tensor("DT_FLOAT", "serving_default_x:0", [-1])},
                {"y": _tensor("DT_FLOAT", "StatefulPartitionedCall_2:0", [-1])},
                "predict",
            ),
        }
    return {
        "model_spec": {"name": "half_plus_two", "signature_name": "", "version": "123"},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


def test_metadata_document_is_tf_servings_key_for_key_in_order(http: httpx.Client, flavour: str) -> None:
    for path in (M + "/metadata", M + "/versions/123/metadata"):
        answer = http.get(path)
        assert answer.status_code == 200, answer.text
        # Compared as text: the same keys in the same order, not only the same mapping.
        assert json.dumps(answer.json()) == json.dumps(expected_metadata(flavour))


def test_status_document_is_tf_servings_in_order(http: httpx.Client) -> None:
    assert json.dumps(http.get(M).json()) == json.dumps(STATUS)


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("predict", {"instances": [1.0]}),
        ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}),
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}),
    ],
)
def test_every_inference_answer_names_the_version(http: httpx.Client, verb: str, body: dict[str, Any]) -> None:
    # TF Serving's REST bodies carry no model_spec; rtserve's X-Model-Version header says which version answered.
    for path in (f"{M}:{verb}", f"{M}/versions/123:{verb}", f"{M}/versions/00000123:{verb}"):
        answer = http.post(path, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == "123"


# -- gRPC: the same server, TF Serving's stubs -----------------------------------------------------------------


def test_grpc_status_and_addressing_of_a_leading_zero_folder(served: Served) -> None:
    with grpc.insecure_channel(served.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        spec = model_pb2.ModelSpec(name="half_plus_two")
        status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec), timeout=30)
        # The REST document is this message's JSON (http_rest_api_util.cc ToJsonString): the same on both.
        assert json_format.MessageToDict(status, preserving_proto_field_name=True) == {
            "model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {}}]
        }
        spec.version.value = 123
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0, 5.0], np.float32)))
        answer = prediction.Predict(request, timeout=30)
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [2.5, 3.0, 4.5]
        assert (answer.model_spec.name, answer.model_spec.version.value) == ("half_plus_two", 123)
        assert answer.model_spec.signature_name == "serving_default"
        metadata = prediction.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"]),
            timeout=30,
        )
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("half_plus_two", 123)
