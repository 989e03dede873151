"""Codec checks stay linear, limits count what costs, and bad shapes and bytes are refused with a 4xx.

Linearity is shown by counting operations (string comparisons, calls of the per-element path), never by timing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from tensorflow.core.example import example_pb2

from service.codecs import arrays, json_io, tfserving_json, v2_json
from service.errors import InvalidArgument
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
BOOL = dtype_from_tf_name("DT_BOOL")
STRING = dtype_from_tf_name("DT_STRING")
SIGNATURE = SignatureSpec(
    "serving_default",
    PREDICT_METHOD,
    {
        "x": TensorSpec("x", FLOAT, (-1, -1)),
        "flags": TensorSpec("flags", BOOL, (-1,)),
        "text": TensorSpec("text", STRING, (-1,)),
    },
    {"y": TensorSpec("y", FLOAT, (-1,))},
)
X_ONLY = SignatureSpec("serving_default", PREDICT_METHOD, {"x": SIGNATURE.inputs["x"]}, SIGNATURE.outputs)
TEXT_ONLY = SignatureSpec("serving_default", PREDICT_METHOD, {"text": SIGNATURE.inputs["text"]}, SIGNATURE.outputs)
FLAGS_ONLY = SignatureSpec("serving_default", PREDICT_METHOD, {"flags": SIGNATURE.inputs["flags"]}, SIGNATURE.outputs)


class CountedName(str):
    """A name that counts how often it is compared for equality (what a list scan does per element)."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountedName.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


@pytest.fixture
def counted() -> Any:
    CountedName.comparisons = 0
    return CountedName


def names(count: int, prefix: str = "o") -> list[str]:
    return [CountedName(f"{prefix}{i}") for i in range(count)]


# -- linear checks ----------------------------------------------------------------------------------------------


def test_v2_output_names_are_checked_in_linear_comparisons(counted: Any) -> None:
    count = 3000
    document = {
        "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}],
        "outputs": [{"name": name} for name in names(count)],
    }
    with pytest.raises(InvalidArgument, match="unknown output"):
        v2_json.decode_infer_header(document, X_ONLY, 100)
    # A list scan per name makes about count**2 / 2 (4.5 million) comparisons; a set about none.
    assert counted.comparisons < 10 * count


def test_check_names_is_linear_in_both_lists(counted: Any) -> None:
    count = 3000
    given = names(count)
    expected = names(count, "o")  # the same names, other objects: every lookup must compare
    arrays.check_names(given, expected, kind="input", where="the request", owner="the model")
    assert counted.comparisons < 10 * count


def test_name_listings_in_messages_are_short() -> None:
    with pytest.raises(InvalidArgument) as error:
        arrays.check_names([f"n{i}" for i in range(10_000)], ["x"], kind="input", where="w", owner="m")
    assert "and 9992 more" in error.value.message
    assert len(error.value.message) < 300


def test_a_nan_keeps_the_vectorized_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def per_element(*_: object) -> None:
        raise AssertionError("the per-element path ran")

    monkeypatch.setattr(arrays, "_from_leaves", per_element)
    value = [[float("nan"), 1.5, float("inf"), -float("inf")]] * 1000
    array = arrays.to_array(value, FLOAT, "x", 10_000)
    assert array.shape == (1000, 4) and array.dtype == np.float32
    assert np.isnan(array[:, 0]).all() and np.isinf(array[:, 2]).all()


def test_a_finite_value_beyond_float32_still_gets_its_message() -> None:
    with pytest.raises(InvalidArgument, match=r"x\[1\]: 1e\+39 is out of range"):
        arrays.to_array([float("nan"), 1e39], FLOAT, "x", 100)


def test_nan_bodies_parse_through_the_fallback_and_convert_whole() -> None:
    body = b'{"instances": [' + b"[NaN, 1.5]," * 999 + b"[NaN, 1.5]]}"
    request = tfserving_json.decode_predict(body, lambda _: X_ONLY, 10_000)
    assert request.inputs["x"].shape == (1000, 2)


# -- limits count what costs ------------------------------------------------------------------------------------


def test_string_tensors_have_their_own_lower_limit() -> None:
    from service.codecs.arrays import Limits

    limits = Limits(elements=1000, strings=10)
    assert arrays.to_array(["a"] * 10, STRING, "text", limits).shape == (10,)
    with pytest.raises(InvalidArgument, match="text has 11 elements, more than the limit of 10"):
        arrays.to_array(["a"] * 11, STRING, "text", limits)
    assert arrays.to_array([1.0] * 11, FLOAT, "x", limits).shape == (11,)  # numbers keep the element limit


def test_binary_bytes_count_against_the_string_limit() -> None:
    from service.codecs.arrays import Limits

    data = (1).to_bytes(4, "little") + b"a"
    header = {"inputs": [{"name": "text", "shape": [11], "datatype": "BYTES", "parameters": {"binary_data_size": 55}}]}
    encoded = json.dumps(header).encode()
    with pytest.raises(InvalidArgument, match="more than the limit of 10"):
        v2_json.decode_infer(encoded + data * 11, TEXT_ONLY, Limits(1000, strings=10), len(encoded))


def test_binary_bytes_stop_at_the_shape_count() -> None:
    data = ((1).to_bytes(4, "little") + b"a") * 1000
    header = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5000}}]}
    encoded = json.dumps(header).encode()
    with pytest.raises(InvalidArgument, match="more than the 1 elements of its shape"):
        v2_json.decode_infer(encoded + data, TEXT_ONLY, 10_000, len(encoded))


def test_json_values_are_counted_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(_: bytes) -> None:
        raise AssertionError("parsed")

    body = b'{"instances": [' + b"[]," * 999 + b"[]]}"
    monkeypatch.setattr(json_io.orjson, "loads", no_parse)
    with pytest.raises(InvalidArgument, match="JSON values, more than the limit of 500"):
        json_io.parse_object(body, 500)
    objects = b'{"instances": [' + b"{}," * 199 + b"{}]}"  # an object costs four times a number
    with pytest.raises(InvalidArgument, match="JSON values, more than the limit of 500"):
        json_io.parse_object(objects, 500)


def test_values_bound_is_an_upper_bound() -> None:
    for text in ['{"a": [1, 2, {"b": []}], "c": "x,y"}', "[[], [], [[1]]]", '{"x": 1}', "[]"]:
        parsed = json.loads(text)
        assert json_io.values_bound(text.encode()) >= _count_values(parsed)


def _count_values(value: object) -> int:
    if isinstance(value, list):
        return 1 + sum(_count_values(v) for v in value)
    if isinstance(value, dict):
        return 4 + sum(1 + _count_values(v) for v in value.values())  # the key is a string value too
    return 1


def test_classify_counts_empty_context_features_in_every_example() -> None:
    context = {f"c{i}": [] for i in range(100)}
    body = orjson.dumps({"context": context, "examples": [{}] * 100})
    with pytest.raises(InvalidArgument, match="the context counts in every example"):
        tfserving_json.decode_examples(body, 1000)
    assert len(tfserving_json.decode_examples(body, 12_000).examples) == 100


def test_classify_serializes_the_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.codecs import tfexample

    calls = []
    original = tfexample.feature_entry

    def counting(*args: Any) -> bytes:
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(tfexample, "feature_entry", counting)
    context = {f"c{i}": [float(i)] for i in range(200)}
    body = orjson.dumps({"context": context, "examples": [{"x": [1.0]}] * 300})
    request = tfserving_json.decode_examples(body, 10**6)
    assert len(request.examples) == 300
    assert len(calls) == 200 + 300  # not 300 x 201


def test_classify_examples_count_as_strings() -> None:
    from service.codecs.arrays import Limits

    body = orjson.dumps({"examples": [{"x": 1}] * 11})
    with pytest.raises(InvalidArgument, match="11 examples, more than the limit of 10"):
        tfserving_json.decode_examples(body, Limits(1000, strings=10))


def test_classify_serialized_bytes_are_bounded() -> None:
    body = orjson.dumps({"context": {"c": "x" * 1000}, "examples": [{"x": 1}] * 100})
    with pytest.raises(InvalidArgument, match="serialize to more than the limit of 8000 bytes"):
        tfserving_json.decode_examples(body, 1000)


@pytest.mark.parametrize(
    "features",
    [
        {"f": [1.5, -2.0], "i": [0, -1, 2**63 - 1, -(2**63)], "s": ["a", {"b64": "AAE="}], "e": [], "t": True},
        {"x": 3, "empty_text": "", "u": "\u00e9t\u00e9"},
    ],
)
def test_hand_written_examples_parse_as_tensorflow_builds_them(features: dict[str, Any]) -> None:
    context = {"x": [9.0], "only_context": [7]}
    body = orjson.dumps({"context": context, "examples": [features]})
    (serialized,) = tfserving_json.decode_examples(body, 1000).examples
    parsed = example_pb2.Example.FromString(serialized)
    expected = example_pb2.Example()
    for name, value in {**context, **features}.items():
        kind, values = tfserving_json._feature(value, name)
        feature = expected.features.feature[name]
        if kind != "empty":
            getattr(feature, kind).value.extend(values)
    assert parsed == expected


# -- bad shapes and bytes are refused, never a 5xx -------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [[0, 2**63], [2**63, 0], [0, 2**64], [0, 2**62, 2**62], [2**62, 2**62], [0, 10**30], [-1, 4], [1, -4]],
)
def test_v2_json_shapes_beyond_the_limit_are_refused(shape: list[int]) -> None:
    document = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}
    with pytest.raises(InvalidArgument, match="shape"):
        v2_json.decode_infer_header(document, X_ONLY, 10_000)


@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**62, 4], [0, 20_000]])
def test_v2_binary_shapes_beyond_the_limit_are_refused(shape: list[int]) -> None:
    header = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}
    encoded = json.dumps(header).encode()
    with pytest.raises(InvalidArgument, match="shape"):
        v2_json.decode_infer(encoded, X_ONLY, 10_000, len(encoded))


def test_tfserving_empty_rows_count_as_elements() -> None:
    body = b'{"inputs": [' + b"[]," * 10_000 + b"[]]}"
    with pytest.raises(InvalidArgument, match="a zero dimension does not make the others free"):
        tfserving_json.decode_predict(body, lambda _: X_ONLY, 10_000)


@pytest.mark.parametrize("byte", [2, 255])
def test_binary_bool_bytes_other_than_0_and_1_are_refused(byte: int) -> None:
    header = {"inputs": [{"name": "flags", "shape": [3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}]}
    encoded = json.dumps(header).encode()
    with pytest.raises(InvalidArgument, match=f"element 1 is byte {byte}; BOOL bytes must be 0 or 1"):
        v2_json.decode_infer(encoded + bytes([1, byte, 0]), FLAGS_ONLY, 100, len(encoded))


def test_binary_bool_zero_and_one_are_read() -> None:
    header = {"inputs": [{"name": "flags", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]}
    encoded = json.dumps(header).encode()
    request = v2_json.decode_infer(encoded + b"\x01\x00", FLAGS_ONLY, 100, len(encoded))
    assert request.inputs["flags"].tolist() == [True, False]


@pytest.mark.parametrize("message", ["x" * 5000, "\x00" * 5000, "\u2603" * 5000, "'" + "\\" * 3000])
def test_error_bodies_stay_under_1000_characters(message: str) -> None:
    body = json_io.error_body(message)
    assert len(body) < 1000
    assert len(body.decode()) < 1000
    assert orjson.loads(body)["error"].endswith("...")


def test_short_error_bodies_are_unchanged() -> None:
    assert orjson.loads(json_io.error_body("bad input 'x'")) == {"error": "bad input 'x'"}
