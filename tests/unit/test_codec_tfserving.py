"""TF Serving REST JSON: predict (row and columnar), classify/regress examples and results, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pytest
from tensorflow.core.example import example_pb2

from service.codecs import tfserving_json
from service.codecs.json_io import error_body
from service.errors import InvalidArgument, NotFound
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
INT8 = dtype_from_tf_name("DT_INT8")
INT64 = dtype_from_tf_name("DT_INT64")
STRING = dtype_from_tf_name("DT_STRING")

LIMIT = 100_000


def signature(name: str = "serving_default", **inputs: TensorSpec) -> SignatureSpec:
    outputs = {"y": TensorSpec("y", FLOAT, (-1, 3))}
    return SignatureSpec(name, PREDICT_METHOD, inputs, outputs)


ONE_INPUT = signature(features=TensorSpec("features", FLOAT, (-1, 4)))
TWO_INPUTS = signature(a=TensorSpec("a", FLOAT, (-1, 2)), b=TensorSpec("b", INT64, (-1,)))
STRING_INPUT = signature(text=TensorSpec("text", STRING, (-1,)))
INT8_INPUT = signature(q=TensorSpec("q", INT8, (-1, 2)))


def decode(document: object, spec: SignatureSpec = ONE_INPUT, limit: int = LIMIT) -> tfserving_json.PredictRequest:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return tfserving_json.decode_predict(body, lambda name: spec, limit)


def refused(document: object, message: str, spec: SignatureSpec = ONE_INPUT, limit: int = LIMIT) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        decode(document, spec, limit)


def parse(body: bytes) -> object:
    return json.loads(body)  # the stdlib reads NaN / Infinity tokens


# -- predict request: row format --


def test_row_format_single_input_bare_instances() -> None:
    request = decode({"instances": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]})
    assert request.signature_name == "serving_default"
    assert request.columnar is False
    array = request.inputs["features"]
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.array([[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]], dtype=np.float32))


def test_row_format_single_input_named_instances() -> None:
    request = decode({"instances": [{"features": [1, 2, 3, 4]}, {"features": [5, 6, 7, 8]}]})
    assert request.inputs["features"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_row_format_several_inputs() -> None:
    request = decode({"instances": [{"a": [1, 2], "b": 7}, {"b": 8, "a": [3, 4]}]}, TWO_INPUTS)
    assert request.inputs["a"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["b"].dtype == np.int64
    assert request.inputs["b"].tolist() == [7, 8]


def test_row_format_scalar_instances_make_a_vector() -> None:
    request = decode({"instances": ["a", "b"]}, STRING_INPUT)
    assert request.inputs["text"].tolist() == [b"a", b"b"]


def test_b64_instance_of_a_one_string_input_signature_is_a_value_not_a_name_map() -> None:
    request = decode({"instances": [{"b64": "aGk="}, "there"]}, STRING_INPUT)
    assert request.inputs["text"].tolist() == [b"hi", b"there"]


def test_signature_name_is_passed_to_the_lookup() -> None:
    asked: list[str] = []

    def lookup(name: str) -> SignatureSpec:
        asked.append(name)
        return ONE_INPUT

    body = orjson.dumps({"signature_name": "other", "instances": [[1, 2, 3, 4]]})
    tfserving_json.decode_predict(body, lookup, LIMIT)
    tfserving_json.decode_predict(b'{"signature_name": "", "instances": [[1, 2, 3, 4]]}', lookup, LIMIT)
    tfserving_json.decode_predict(b'{"instances": [[1, 2, 3, 4]]}', lookup, LIMIT)
    assert asked == ["other", "serving_default", "serving_default"]


def test_signature_lookup_errors_propagate() -> None:
    def lookup(name: str) -> SignatureSpec:
        raise NotFound(f"no signature {name}")

    with pytest.raises(NotFound, match="no signature nope"):
        tfserving_json.decode_predict(b'{"signature_name": "nope", "instances": [1]}', lookup, LIMIT)


def test_signature_name_must_be_a_string() -> None:
    refused({"signature_name": 3, "instances": [[1, 2, 3, 4]]}, "'signature_name' must be a string, got a number")


def test_both_instances_and_inputs_are_refused() -> None:
    refused(
        {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]},
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
    )


def test_neither_instances_nor_inputs_is_refused() -> None:
    refused({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key")


def test_instances_must_be_a_non_empty_list() -> None:
    refused({"instances": {"features": [1, 2, 3, 4]}}, "Excepting 'instances' to be an list/array")
    refused({"instances": []}, "No values in 'instances' array")


def test_ragged_instances_are_refused() -> None:
    refused(
        {"instances": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3]]},
        "instances[2] has a different shape than instances[0] (ragged)",
    )


def test_ragged_named_instances_are_refused() -> None:
    refused(
        {"instances": [{"a": [1, 2], "b": 1}, {"a": [1], "b": 2}]},
        "instances[1]['a'] has a different shape than instances[0]['a'] (ragged)",
        TWO_INPUTS,
    )


def test_unknown_input_name_in_an_instance() -> None:
    refused(
        {"instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2], "b": 1, "c": 3}]},
        "Failed to process element: 1 key: c of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
        "have named input: c",
        TWO_INPUTS,
    )


def test_missing_input_name_in_an_instance() -> None:
    refused(
        {"instances": [{"a": [1, 2]}]},
        "Failed to process element: 0 of 'instances' list. JSON object keys must be equal to: a,b",
        TWO_INPUTS,
    )


def test_bare_instances_for_several_inputs_are_refused() -> None:
    refused(
        {"instances": [[1, 2]]},
        "instances[0] is a bare value, but signature 'serving_default' has 2",
        TWO_INPUTS,
    )


def test_mixing_named_and_bare_instances_is_refused() -> None:
    refused(
        {"instances": [{"features": [1, 2, 3, 4]}, [1, 2, 3, 4]]},
        "instances[1] is not an object naming inputs, but instances[0] is",
    )
    refused(
        {"instances": [[1, 2, 3, 4], {"features": [1, 2, 3, 4]}]},
        "instances[1]: expected a number (DT_FLOAT), got an object",
    )


def test_values_are_checked_against_the_input_dtype() -> None:
    refused({"instances": [[1, 2], [3, 128]]}, "instances[1][1]: 128 is out of range for DT_INT8", INT8_INPUT)
    refused({"instances": [[1, 2], [3, 1.5]]}, "instances[1][1]: 1.5 is not an integer (DT_INT8)", INT8_INPUT)
    refused({"instances": [[1.0, True, 3.0, 4.0]]}, "instances[0][1]: expected a number (DT_FLOAT), got a boolean")
    refused({"instances": [["1", 2, 3, 4]]}, "instances[0][0]: expected a number (DT_FLOAT), got a string")
    refused(
        {"instances": [{"a": [1, 2], "b": 1.5}]},
        "instances[0]['b']: 1.5 is not an integer (DT_INT64)",
        TWO_INPUTS,
    )


def test_nan_tokens_are_accepted_in_float_inputs() -> None:
    request = decode(b'{"instances": [[NaN, Infinity, -Infinity, 1.0]]}')
    row = request.inputs["features"][0]
    assert np.isnan(row[0]) and row[1] == np.inf and row[2] == -np.inf and row[3] == 1.0


def test_element_limit_applies() -> None:
    refused({"instances": [[1, 2, 3, 4]] * 3}, "instances has 12 elements, more than the limit of 8", limit=8)


def test_malformed_json_is_refused() -> None:
    refused(b'{"instances": [1, 2', "malformed JSON")
    refused(b"[" * 100_000, "malformed JSON: nested deeper than 1024 levels")


# -- predict request: columnar format --


def test_columnar_bare_value_for_one_input() -> None:
    request = decode({"inputs": [[1, 2, 3, 4]]})
    assert request.columnar is True
    assert request.inputs["features"].shape == (1, 4)


def test_columnar_named_inputs_are_whole_tensors() -> None:
    request = decode({"inputs": {"a": [[1, 2], [3, 4], [5, 6]], "b": [1, 2, 3]}}, TWO_INPUTS)
    assert request.inputs["a"].shape == (3, 2)
    assert request.inputs["b"].tolist() == [1, 2, 3]


def test_columnar_b64_value_for_a_one_string_input() -> None:
    request = decode({"inputs": {"b64": "aGk="}}, STRING_INPUT)
    assert request.inputs["text"].shape == ()
    assert request.inputs["text"].item() == b"hi"


def test_columnar_unknown_and_missing_names() -> None:
    refused(
        {"inputs": {"a": [[1, 2]], "b": [1], "zz": 1}},
        "'inputs' names unknown input 'zz'; signature 'serving_default' has inputs 'a', 'b'",
        TWO_INPUTS,
    )
    refused({"inputs": {"a": [[1, 2]]}}, "Missing named input: b in 'inputs' object.", TWO_INPUTS)
    # A misspelt name: TF Serving's words for the missing one come first.
    refused({"inputs": {"a": [[1, 2]], "B": [1]}}, "Missing named input: b in 'inputs' object.", TWO_INPUTS)


def test_columnar_bare_value_for_several_inputs_is_refused() -> None:
    refused(
        {"inputs": [[1, 2]]},
        "'inputs' is a bare value, but signature 'serving_default' has 2 inputs",
        TWO_INPUTS,
    )


def test_columnar_values_name_their_input_in_messages() -> None:
    refused(
        {"inputs": {"a": [[1, 2], [3]], "b": [1, 2]}},
        "inputs['a'][1] has a different shape than inputs['a'][0] (ragged)",
        TWO_INPUTS,
    )
    refused({"inputs": [[1, 2, 3, "x"]]}, "inputs[0][3]: expected a number (DT_FLOAT), got a string")


# -- predict response --


def test_row_response_single_output_is_a_list_of_values() -> None:
    body = tfserving_json.encode_predict({"y": np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)}, False)
    assert body == b'{"predictions":[[0.1,0.2],[0.3,0.4]]}'


def test_row_response_several_outputs_is_a_list_of_objects() -> None:
    outputs: dict[str, np.ndarray] = {
        "scores": np.array([[0.5, 0.5], [1.0, 0.0]], dtype=np.float32),
        "label": np.array([1, 0], dtype=np.int64),
    }
    assert parse(tfserving_json.encode_predict(outputs, False)) == {
        "predictions": [{"scores": [0.5, 0.5], "label": 1}, {"scores": [1.0, 0.0], "label": 0}]
    }


def test_row_response_with_disagreeing_batch_sizes_is_refused() -> None:
    outputs = {"a": np.zeros((2, 3)), "b": np.zeros((3,))}
    with pytest.raises(InvalidArgument, match=re.escape("outputs 'a' and 'b' disagree on the batch size (2 vs 3)")):
        tfserving_json.encode_predict(outputs, False)


def test_row_response_with_a_scalar_output_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="output 'n' is a scalar"):
        tfserving_json.encode_predict({"n": np.array(3)}, False)


def test_columnar_response() -> None:
    one = tfserving_json.encode_predict({"y": np.array([[1.5]], dtype=np.float32)}, True)
    assert one == b'{"outputs":[[1.5]]}'
    several = tfserving_json.encode_predict({"a": np.zeros((2, 3)), "n": np.array(3)}, True)
    assert parse(several) == {"outputs": {"a": [[0.0] * 3] * 2, "n": 3}}


def test_response_writes_nan_tokens_and_b64_outputs() -> None:
    outputs = {
        "y": np.array([np.nan, np.inf], dtype=np.float32),
        "raw_bytes": np.array([b"ab", b"cd"], dtype=object),
        "text": np.array(["é".encode(), b"\xff"], dtype=object),
    }
    body = tfserving_json.encode_predict(outputs, False)
    assert b"NaN" in body and b"Infinity" in body
    rows = parse(body)["predictions"]  # type: ignore[index]
    assert rows[0]["raw_bytes"] == {"b64": "YWI="}
    assert rows[0]["text"] == "é"
    assert rows[1]["text"] == {"b64": "/w=="}
    assert np.isnan(rows[0]["y"]) and rows[1]["y"] == float("inf")


def test_encode_error() -> None:
    assert parse(error_body("input 'x' is bad")) == {"error": "input 'x' is bad"}


# -- classify / regress requests --


def examples_of(document: object, limit: int = LIMIT) -> tuple[str, list[example_pb2.Example]]:
    request = tfserving_json.decode_examples(orjson.dumps(document), limit)
    assert request.examples.dtype == object
    assert request.examples.ndim == 1
    parsed = []
    for serialized in request.examples:
        example = example_pb2.Example()
        example.ParseFromString(serialized)
        parsed.append(example)
    return request.signature_name, parsed


def test_examples_become_tf_examples() -> None:
    name, (first, second) = examples_of(
        {
            "signature_name": "classify_x",
            "examples": [
                {"age": 30, "height": 1.8, "city": "Zürich", "tags": ["a", "b"], "pic": {"b64": "AAE="}},
                {"age": [1, 2], "mixed": [1, 2.5], "flag": True},
            ],
        }
    )
    assert name == "classify_x"
    features = first.features.feature
    assert list(features["age"].int64_list.value) == [30]
    assert features["height"].float_list.value[0] == pytest.approx(1.8)
    assert list(features["city"].bytes_list.value) == ["Zürich".encode()]
    assert list(features["tags"].bytes_list.value) == [b"a", b"b"]
    assert list(features["pic"].bytes_list.value) == [b"\x00\x01"]
    features = second.features.feature
    assert list(features["age"].int64_list.value) == [1, 2]
    assert list(features["mixed"].float_list.value) == [1.0, 2.5]
    assert list(features["flag"].int64_list.value) == [1]


def test_context_is_merged_into_every_example_and_examples_win() -> None:
    _, (first, second) = examples_of(
        {"context": {"country": "CH", "year": 2020}, "examples": [{"x": 1.5}, {"x": 2.5, "year": 1999}]}
    )
    assert list(first.features.feature["country"].bytes_list.value) == [b"CH"]
    assert list(first.features.feature["year"].int64_list.value) == [2020]
    assert list(second.features.feature["country"].bytes_list.value) == [b"CH"]
    assert list(second.features.feature["year"].int64_list.value) == [1999]
    assert second.features.feature["x"].float_list.value[0] == 2.5


def test_empty_feature_list_has_no_kind() -> None:
    _, (example,) = examples_of({"examples": [{"empty": []}]})
    assert example.features.feature["empty"].WhichOneof("kind") is None


def test_signature_name_defaults_for_examples() -> None:
    name, _ = examples_of({"examples": [{"x": 1}]})
    assert name == "serving_default"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"instances": []}, "When method is classify, key 'examples' is expected and was not found"),
        ({"examples": {"x": 1}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' is an empty list"),
        ({"examples": [[1, 2]]}, "examples[0] must be an object of features, got a list"),
        ({"examples": [{"x": 1}], "context": [1]}, "context must be an object of features, got a list"),
        ({"examples": [{"x": None}]}, "examples[0]['x'] is null; a feature value is a number"),
        ({"examples": [{"x": [[1]]}]}, "examples[0]['x'][0] is a list; a feature value is a number"),
        ({"examples": [{"x": {"a": 1}}]}, "examples[0]['x'] is an object"),
        ({"examples": [{"x": ["a", 1]}]}, "examples[0]['x'] mixes strings and numbers"),
        ({"examples": [{"x": {"b64": "!!"}}]}, "examples[0]['x']: invalid base64"),
        ({"examples": [{"x": 2**63}]}, "examples[0]['x']: 9223372036854775808 is out of range for an int64"),
        (
            {"examples": [{"x": [1.0, 1e39]}]},
            "examples[0]['x'][1]: 1e+39 is out of range for a float feature",
        ),
        ({"signature_name": 1, "examples": [{"x": 1}]}, "'signature_name' must be a string"),
    ],
)
def test_bad_examples_are_refused(document: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        tfserving_json.decode_examples(orjson.dumps(document), LIMIT)


def test_examples_feature_value_limit() -> None:
    # Each example costs its features and values, the context's included: 3 x ((1 + 2) + (1 + 2)).
    document = {"context": {"c": [1, 2]}, "examples": [{"x": [1, 2]}] * 3}
    examples_of(document, limit=18)
    with pytest.raises(InvalidArgument, match="more than the limit of 17 features and feature values"):
        tfserving_json.decode_examples(orjson.dumps(document), 17)


# -- classify / regress responses --


def test_classify_results() -> None:
    classes = np.array([[b"setosa", b"virginica"], [b"a", b"b"]], dtype=object)
    scores = np.array([[0.9, 0.1], [np.nan, 0.5]], dtype=np.float32)
    body = tfserving_json.encode_classify(classes, scores)
    assert body.startswith(b'{"results":[[["setosa",0.9],["virginica",0.1]],[["a",NaN]')
    results = parse(body)["results"]  # type: ignore[index]
    assert results[1][1] == ["b", 0.5]


def test_classify_with_only_scores_or_only_classes() -> None:
    assert parse(tfserving_json.encode_classify(None, np.array([[0.25, 0.75]]))) == {
        "results": [[["", 0.25], ["", 0.75]]]
    }
    assert parse(tfserving_json.encode_classify(np.array([[b"x"]], dtype=object), None)) == {"results": [[["x", 0.0]]]}


def test_classify_refuses_bad_outputs() -> None:
    with pytest.raises(InvalidArgument, match="neither 'classes' nor 'scores'"):
        tfserving_json.encode_classify(None, None)
    with pytest.raises(InvalidArgument, match=re.escape("[batch_size, num_classes], got [3]")):
        tfserving_json.encode_classify(None, np.zeros(3))
    with pytest.raises(InvalidArgument, match="'classes' has shape"):
        tfserving_json.encode_classify(np.array([[b"a"]], dtype=object), np.zeros((1, 2)))


def test_regress_results() -> None:
    assert tfserving_json.encode_regress(np.array([[1.5], [0.1]], dtype=np.float64)) == b'{"results":[1.5,0.1]}'
    assert tfserving_json.encode_regress(np.array([2.0, np.inf], dtype=np.float32)) == b'{"results":[2.0,Infinity]}'
    with pytest.raises(InvalidArgument, match=re.escape("[batch_size] or [batch_size, 1], got [2, 2]")):
        tfserving_json.encode_regress(np.zeros((2, 2)))
