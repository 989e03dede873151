"""Open Inference Protocol REST JSON: infer requests and responses, model metadata, errors."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson
import pytest

from service.codecs import v2_json
from service.codecs.json_io import error_body
from service.errors import InvalidArgument
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
INT32 = dtype_from_tf_name("DT_INT32")
UINT32 = dtype_from_tf_name("DT_UINT32")
BOOL = dtype_from_tf_name("DT_BOOL")
STRING = dtype_from_tf_name("DT_STRING")

LIMIT = 100_000

SIGNATURE = SignatureSpec(
    "serving_default",
    PREDICT_METHOD,
    {
        "x": TensorSpec("x", FLOAT, (-1, 4)),
        "ids": TensorSpec("ids", UINT32, (-1,)),
        "flags": TensorSpec("flags", BOOL, (-1,)),
        "text": TensorSpec("text", STRING, (-1,)),
    },
    {"probs": TensorSpec("probs", FLOAT, (-1, 3)), "label": TensorSpec("label", STRING, (-1,))},
)
ONE_INPUT = SignatureSpec("serving_default", PREDICT_METHOD, {"x": TensorSpec("x", FLOAT, (-1, 4))}, SIGNATURE.outputs)


def tensor(name: str, datatype: str, shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}


def x_input(**changes: Any) -> dict[str, Any]:
    entry = tensor("x", "FP32", [2, 4], [1, 2, 3, 4, 5, 6, 7, 8])
    entry.update(changes)
    return entry


def decode(document: object, spec: SignatureSpec = ONE_INPUT, limit: int = LIMIT) -> v2_json.InferRequest:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return v2_json.decode_infer(body, spec, limit)


def refused(document: object, message: str, spec: SignatureSpec = ONE_INPUT, limit: int = LIMIT) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        decode(document, spec, limit)


def encode_json(*args: Any) -> bytes:
    body, header_length = v2_json.encode_infer(*args)
    assert header_length is None
    return body


# -- request --


def test_flat_data_takes_the_request_shape() -> None:
    request = decode({"id": "42", "inputs": [x_input()]})
    assert request.id == "42"
    assert request.parameters == {}
    assert request.requested_outputs is None
    array = request.inputs["x"]
    assert array.dtype == np.float32
    assert array.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_nested_data_is_accepted() -> None:
    request = decode({"inputs": [x_input(data=[[1, 2, 3, 4], [5, 6, 7, 8]])]})
    assert request.inputs["x"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_nested_data_only_counts_in_row_major_order_like_triton() -> None:
    request = decode({"inputs": [x_input(data=[[1, 2], [3, 4, 5, 6], [7], 8])]})
    assert request.inputs["x"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_every_datatype_kind() -> None:
    request = decode(
        {
            "inputs": [
                x_input(),
                tensor("ids", "UINT32", [3], [0, 1, 4294967295]),
                tensor("flags", "BOOL", [2], [True, False]),
                tensor("text", "BYTES", [2], ["héllo", ""]),
            ],
            "parameters": {"priority": 1},
        },
        SIGNATURE,
    )
    assert request.parameters == {"priority": 1}
    assert request.inputs["ids"].dtype == np.uint32
    assert request.inputs["ids"].tolist() == [0, 1, 4294967295]
    assert request.inputs["flags"].tolist() == [True, False]
    assert request.inputs["text"].dtype == object
    assert request.inputs["text"].tolist() == ["héllo".encode(), b""]


def test_scalar_input() -> None:
    spec = SignatureSpec("s", PREDICT_METHOD, {"k": TensorSpec("k", INT32, ())}, {})
    request = decode({"inputs": [tensor("k", "INT32", [], [7])]}, spec)
    assert request.inputs["k"].shape == ()
    assert request.inputs["k"].item() == 7


def test_element_count_must_match_the_shape() -> None:
    refused(
        {"inputs": [x_input(data=[1, 2, 3, 4, 5, 6, 7])]},
        "input 'x' has shape [2, 4] (8 elements) but 7 values",
    )


def test_datatype_must_match_the_model() -> None:
    refused({"inputs": [x_input(datatype="FP64")]}, "input 'x' has datatype FP64, the model expects FP32")


def test_unknown_datatype() -> None:
    refused({"inputs": [x_input(datatype="FLOAT")]}, "input 'x' has unknown datatype 'FLOAT'")
    refused({"inputs": [x_input(datatype=None)]}, "input 'x' has no 'datatype' string")


@pytest.mark.parametrize("shape", [[2, -4], [2, 4.0], [True, 4], "2,4", None, [[2], 4]])
def test_invalid_shapes_are_refused(shape: object) -> None:
    refused({"inputs": [x_input(shape=shape)]}, "input 'x' has an invalid shape")


def test_duplicate_input_names() -> None:
    refused({"inputs": [x_input(), x_input()]}, "input 'x' appears more than once")


def test_unknown_and_missing_inputs() -> None:
    refused(
        {"inputs": [x_input(), tensor("y", "FP32", [1], [1])]},
        "the request names unknown input 'y'; the model has inputs 'x'",
    )
    refused({"inputs": []}, "the request is missing input 'x'; the model has inputs 'x'")


def test_malformed_request_structure() -> None:
    refused({"id": "1"}, "'inputs' must be a list of input objects, got null")
    refused({"inputs": [[1, 2]]}, "inputs[0] must be an object, got a list")
    refused({"inputs": [{"datatype": "FP32"}]}, "inputs[0] has no 'name' string")
    refused({"inputs": [x_input(data=None)]}, "input 'x' data must be a list, got null")
    refused({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}, "input 'x' has no 'data'")
    refused({"id": 42, "inputs": [x_input()]}, "'id' must be a string, got a number")
    refused({"inputs": [x_input()], "parameters": [1]}, "the request has 'parameters' that are a list")


def test_bytes_data_is_text_only() -> None:
    spec = SignatureSpec("s", PREDICT_METHOD, {"text": SIGNATURE.inputs["text"]}, {})
    refused(
        {"inputs": [tensor("text", "BYTES", [1], [{"b64": "YQ=="}])]},
        "input 'text' data[0]: expected a string (BYTES), got a {\"b64\": ...} object",
        spec,
    )
    refused({"inputs": [tensor("text", "BYTES", [1], [5])]}, "expected a string (BYTES), got a number", spec)


def test_bool_data_is_true_or_false_only() -> None:
    spec = SignatureSpec("s", PREDICT_METHOD, {"flags": SIGNATURE.inputs["flags"]}, {})
    refused(
        {"inputs": [tensor("flags", "BOOL", [2], [1, 0])]},
        "input 'flags' data[0]: expected true or false (BOOL), got a number",
        spec,
    )


def test_numeric_data_rules() -> None:
    refused(
        {"inputs": [x_input(data=[1, 2, 3, 4, 5, 6, 7, True])]},
        "data[7]: expected a number (FP32), got a boolean",
    )
    refused(
        {"inputs": [x_input(data=[1, 2, 3, 4, 5, 6, 7, "8"])]},
        "data[7]: expected a number (FP32), got a string",
    )
    spec = SignatureSpec("s", PREDICT_METHOD, {"ids": SIGNATURE.inputs["ids"]}, {})
    refused({"inputs": [tensor("ids", "UINT32", [1], [-1])]}, "data[0]: -1 is out of range for UINT32", spec)
    refused({"inputs": [tensor("ids", "UINT32", [1], [0.5])]}, "data[0]: 0.5 is not an integer (UINT32)", spec)


def test_nan_tokens_in_data() -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [NaN, Infinity, 1, 2]}]}'
    array = decode(body).inputs["x"]
    assert np.isnan(array[0, 0]) and array[0, 1] == np.inf


def test_element_limit_is_checked_from_the_shape_first() -> None:
    refused(
        {"inputs": [x_input(shape=[1000, 1000], data=[1])]},
        "input 'x' has 1000000 elements, more than the limit of 100000",
    )


def test_binary_data_needs_the_binary_extension() -> None:
    entry = x_input(parameters={"binary_data_size": 32})
    del entry["data"]
    refused(
        {"inputs": [entry]},
        "input 'x' has binary data (binary_data_size), but the request has no binary part",
    )


def test_requested_outputs() -> None:
    request = decode({"inputs": [x_input()], "outputs": [{"name": "label"}, {"name": "probs", "parameters": {}}]})
    assert request.requested_outputs == ["label", "probs"]


def test_requested_outputs_are_checked() -> None:
    refused(
        {"inputs": [x_input()], "outputs": [{"name": "nope"}]},
        "the request names unknown output 'nope'; the model has outputs 'probs', 'label'",
    )
    refused(
        {"inputs": [x_input()], "outputs": [{"name": "label"}] * 2},
        "output 'label' is requested more than once",
    )
    refused({"inputs": [x_input()], "outputs": ["label"]}, "outputs[0] must be an object with a 'name' string")
    refused({"inputs": [x_input()], "outputs": {"name": "label"}}, "'outputs' must be a list of output objects")
    refused(
        {"inputs": [x_input()], "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
        "output 'label' asks for classification, which is not supported",
    )


def test_malformed_json() -> None:
    refused(b'{"inputs": [', "malformed JSON")
    refused(b"[" * 100_000, "malformed JSON: nested deeper than 1024 levels")


# -- response --


def test_response_structure() -> None:
    outputs = {
        "probs": np.array([[0.1, 0.2, 0.7]], dtype=np.float32),
        "label": np.array([b"virginica"], dtype=object),
    }
    datatypes = {"probs": FLOAT, "label": STRING}
    body = encode_json("iris", "3", "req-1", outputs, datatypes)
    assert json.loads(body) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "req-1",
        "outputs": [
            {"name": "probs", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["virginica"]},
        ],
    }


def test_response_omits_a_missing_id() -> None:
    body = encode_json("m", "1", None, {"probs": np.zeros((1, 3), np.float32)}, {"probs": FLOAT})
    assert "id" not in json.loads(body)


def test_response_data_is_flat_row_major() -> None:
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    (output,) = json.loads(encode_json("m", "1", None, {"t": array}, {"t": INT32}))["outputs"]
    assert output["shape"] == [2, 3, 4]
    assert output["data"] == list(range(24))


def test_response_bytes_fall_back_to_base64_text() -> None:
    label = np.array([b"ok", b"\xff\xfe"], dtype=object)
    (output,) = json.loads(encode_json("m", "1", None, {"label_bytes": label}, {"label_bytes": STRING}))["outputs"]
    assert output["data"] == ["ok", "//4="]


def test_response_writes_nan_tokens() -> None:
    body = encode_json("m", "1", None, {"p": np.array([np.nan, -np.inf], np.float32)}, {"p": FLOAT})
    assert b'"data":[NaN,-Infinity]' in body


def test_response_casts_to_the_declared_datatype() -> None:
    body = encode_json("m", "1", None, {"p": np.array([0.1], np.float64)}, {"p": FLOAT})
    assert b'"data":[0.1]' in body and b'"FP32"' in body


def test_response_datatype_of_an_undeclared_output_comes_from_the_array() -> None:
    outputs = {"a": np.array([1], np.int64), "s": np.array([b"x"], dtype=object), "b": np.array([True])}
    decoded = json.loads(encode_json("m", "1", None, outputs, {}))
    assert [o["datatype"] for o in decoded["outputs"]] == ["INT64", "BYTES", "BOOL"]


def test_round_trip_through_decode() -> None:
    array = np.array([[0.5, 1.5, 2.5, 3.5]], dtype=np.float32)
    (output,) = json.loads(encode_json("m", "1", None, {"x": array}, {"x": FLOAT}))["outputs"]
    request = decode({"inputs": [output]})
    np.testing.assert_array_equal(request.inputs["x"], array)


# -- metadata and errors --


def test_model_metadata() -> None:
    spec = SignatureSpec(
        "serving_default",
        PREDICT_METHOD,
        {"x": TensorSpec("x", FLOAT, (-1, 4)), "any": TensorSpec("any", STRING, None)},
        {"probs": TensorSpec("probs", FLOAT, (-1, 3))},
    )
    assert v2_json.model_metadata("iris", ["1", "2"], "tensorflow_savedmodel", spec) == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "any", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_encode_error() -> None:
    assert json.loads(error_body("input 'x' is bad")) == {"error": "input 'x' is bad"}
