"""The shared codec rules: JSON parsing and writing, JSON values <-> numpy arrays."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import orjson
import pytest

from service.codecs import arrays, json_io
from service.errors import Internal, InvalidArgument
from service.tensors import DType, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
DOUBLE = dtype_from_tf_name("DT_DOUBLE")
HALF = dtype_from_tf_name("DT_HALF")
INT8 = dtype_from_tf_name("DT_INT8")
UINT8 = dtype_from_tf_name("DT_UINT8")
INT32 = dtype_from_tf_name("DT_INT32")
INT64 = dtype_from_tf_name("DT_INT64")
UINT64 = dtype_from_tf_name("DT_UINT64")
BOOL = dtype_from_tf_name("DT_BOOL")
STRING = dtype_from_tf_name("DT_STRING")

LIMIT = 1_000_000


def convert(value: object, dtype: DType, **options: object) -> np.ndarray:
    return arrays.to_array(value, dtype, "x", LIMIT, **options)  # type: ignore[arg-type]


def refused(value: object, dtype: DType, message: str, **options: object) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        convert(value, dtype, **options)


# -- parsing --


def test_parse_object_returns_the_document() -> None:
    assert json_io.parse_object(b'{"instances": [[1, 2.5]], "s": "t"}') == {"instances": [[1, 2.5]], "s": "t"}


def test_parse_accepts_nan_and_infinity_tokens_like_tf_serving() -> None:
    document = json_io.parse_object(b'{"a": [NaN, Infinity, -Infinity, 1.5]}')
    values = document["a"]
    assert np.isnan(values[0])
    assert values[1:] == [float("inf"), float("-inf"), 1.5]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "malformed JSON: the body must be a JSON object, got a list"),
        (b'"text"', "malformed JSON: the body must be a JSON object, got a string"),
        (b'{"a": ', "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"a": 1,}', "malformed JSON"),
        (b'{"a": "\xff"}', "malformed JSON"),
        (b'{"a": NaN,}', "malformed JSON"),  # the stdlib fallback refuses it too
        (b'{"a": Nan}', "malformed JSON"),
    ],
)
def test_parse_refuses_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        json_io.parse_object(body)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="malformed JSON: nested deeper than 1024 levels"):
        json_io.parse_object(b"[" * 100_000)


def test_deep_nesting_is_refused_on_the_nan_fallback_path_too() -> None:
    # orjson stops at the NaN first, so only the fallback's own depth check stands between the body and the
    # stdlib's recursion.
    body = b'{"a": NaN, "b": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidArgument, match="nested deeper than 1024 levels"):
        json_io.parse_object(body)


def test_fallback_accepts_nesting_within_the_limit() -> None:
    body = b'{"a": NaN, "b": ' + b"[" * 50 + b"]" * 50 + b"}"
    assert "b" in json_io.parse_object(body)


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    assert json_io.nesting_depth(b'{"a": ["[[[[", "\\"[[", 1]}') == 2
    assert json_io.nesting_depth(b"[[[]], [[[]]]]") == 4
    assert json_io.nesting_depth(b"1") == 0


def test_nesting_depth_handles_unterminated_and_escaped_strings() -> None:
    # Linear even on a long run of escaped quotes with no closing quote (a naive pattern is quadratic here).
    body = b'{"a": NaN, "b": "' + b'\\"' * 200_000 + b"\\"
    assert json_io.nesting_depth(body) == 1
    with pytest.raises(InvalidArgument, match="malformed JSON"):
        json_io.parse_object(body)


def test_ten_megabytes_of_floats_parse_and_convert_correctly() -> None:
    rng = np.random.default_rng(7)
    rows = rng.random((280_000, 4)).tolist()
    body = orjson.dumps({"instances": rows})
    assert len(body) > 10_000_000
    document = json_io.parse_object(body)
    array = arrays.to_array(document["instances"], DOUBLE, "instances", 10**7)
    assert array.shape == (280_000, 4)
    np.testing.assert_array_equal(array, np.array(rows))


def test_error_body_and_dumps() -> None:
    assert json.loads(json_io.error_body('bad "x"')) == {"error": 'bad "x"'}
    assert json_io.dumps({"a": np.array([1, 2], dtype=np.int8)}) == b'{"a":[1,2]}'


# -- JSON -> numpy: numbers --


def test_nested_lists_become_an_array_of_the_dtype() -> None:
    array = convert([[1, 2.5], [3, 4]], FLOAT)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.array([[1, 2.5], [3, 4]], dtype=np.float32))


@pytest.mark.parametrize("dtype", [INT8, UINT8, INT32, INT64, UINT64, HALF, FLOAT, DOUBLE])
def test_every_numeric_dtype_is_produced_exactly(dtype: DType) -> None:
    array = convert([[1, 2], [3, 4]], dtype)
    assert array.dtype == dtype.numpy
    assert array.tolist() == [[1, 2], [3, 4]]


def test_a_scalar_becomes_a_zero_dimensional_array() -> None:
    array = convert(5, INT64)
    assert array.shape == ()
    assert array.item() == 5


def test_empty_lists_keep_their_shape() -> None:
    assert convert([], FLOAT).shape == (0,)
    assert convert([[], []], INT32).shape == (2, 0)


def test_ragged_lists_are_refused_naming_the_position() -> None:
    refused([[1, 2], [3]], FLOAT, "x[1] has a different shape than x[0] (ragged)")
    refused([[1, 2], [3, [4]]], FLOAT, "x[1][1] has a different shape than x[1][0] (ragged)")
    refused([[1, 2], 3], FLOAT, "x[1] has a different shape than x[0] (ragged)")
    refused([[], [1]], FLOAT, "x[1] has a different shape than x[0] (ragged)")
    refused([["a", "b"], ["c"]], STRING, "x[1] has a different shape than x[0] (ragged)")


def test_fractional_floats_are_refused_for_integer_tensors() -> None:
    refused([1, 2.5], INT32, "x[1]: 2.5 is not an integer (DT_INT32)")
    refused([[1.0, 2.0], [3.0, 0.5]], INT64, "x[1][1]: 0.5 is not an integer (DT_INT64)")


def test_whole_floats_are_accepted_for_integer_tensors() -> None:
    array = convert([1.0, -2.0, 3], INT32)
    assert array.dtype == np.int32
    assert array.tolist() == [1, -2, 3]


def test_nan_is_refused_for_integer_tensors() -> None:
    refused([1.0, float("nan")], INT32, "x[1]: nan is not an integer (DT_INT32)")


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        ([1, 128], INT8, "x[1]: 128 is out of range for DT_INT8 [-128, 127]"),
        ([-129], INT8, "x[0]: -129 is out of range for DT_INT8 [-128, 127]"),
        ([256], UINT8, "x[0]: 256 is out of range for DT_UINT8 [0, 255]"),
        ([-1], UINT8, "x[0]: -1 is out of range for DT_UINT8 [0, 255]"),
        ([-1], UINT64, "x[0]: -1 is out of range for DT_UINT64"),
        ([2**63], INT64, "x[0]: 9223372036854775808 is out of range for DT_INT64"),
        ([2**31], INT32, "x[0]: 2147483648 is out of range for DT_INT32"),
        ([300.0], INT8, "x[0]: 300.0 is out of range for DT_INT8"),
        ([1e20], INT64, "x[0]: 1e+20 is out of range for DT_INT64"),
    ],
)
def test_integers_out_of_range_are_refused(values: list[object], dtype: DType, message: str) -> None:
    refused(values, dtype, message)


def test_integer_range_limits_are_accepted() -> None:
    assert convert([-128, 127], INT8).tolist() == [-128, 127]
    assert convert([0, 2**64 - 1], UINT64).tolist() == [0, 2**64 - 1]
    assert convert([-(2**63), 2**63 - 1], INT64).tolist() == [-(2**63), 2**63 - 1]


def test_floats_too_big_for_the_dtype_are_refused() -> None:
    refused([1.0, 1e39], FLOAT, "x[1]: 1e+39 is out of range for DT_FLOAT")
    refused([70000.0], HALF, "x[0]: 70000.0 is out of range for DT_HALF")
    assert convert([1e39], DOUBLE).tolist() == [1e39]


def test_nan_and_infinities_are_accepted_for_float_tensors() -> None:
    array = convert([1.0, float("nan"), float("inf"), float("-inf")], FLOAT)
    assert array.dtype == np.float32
    assert np.isnan(array[1])
    assert array[2] == np.inf and array[3] == -np.inf


def test_booleans_are_refused_for_numeric_tensors() -> None:
    refused([True, False], FLOAT, "x[0]: expected a number (DT_FLOAT), got a boolean")
    # numpy alone would read these as 1.0 and 2.0
    refused([[1.5, 2.0], [True, 2.0]], FLOAT, "x[1][0]: expected a number (DT_FLOAT), got a boolean")
    refused([1, False], INT32, "x[1]: expected an integer (DT_INT32), got a boolean")
    refused(True, DOUBLE, "x: expected a number (DT_DOUBLE), got a boolean")


def test_strings_are_refused_for_numeric_tensors() -> None:
    refused(["1.5"], FLOAT, "x[0]: expected a number (DT_FLOAT), got a string")  # numpy would parse it
    refused([1, "2"], INT64, "x[1]: expected an integer (DT_INT64), got a string")


def test_other_json_values_are_refused_for_numeric_tensors() -> None:
    refused([1.0, None], FLOAT, "x[1]: expected a number (DT_FLOAT), got null")
    refused([{"a": 1}], FLOAT, "x[0]: expected a number (DT_FLOAT), got an object")
    refused([{"b64": "AAA="}], FLOAT, 'x[0]: expected a number (DT_FLOAT), got a {"b64": ...} object')


def test_bool_tensors_accept_only_true_and_false() -> None:
    array = convert([[True, False]], BOOL)
    assert array.dtype == np.bool_
    assert array.tolist() == [[True, False]]
    refused([1, 0], BOOL, "x[0]: expected true or false (DT_BOOL), got a number")
    refused([True, "false"], BOOL, "x[1]: expected true or false (DT_BOOL), got a string")
    refused([True, 1.0], BOOL, "x[1]: expected true or false (DT_BOOL), got a number")


def test_the_label_keyword_names_the_dtype_in_messages() -> None:
    refused(["a"], FLOAT, "x[0]: expected a number (FP32), got a string", label="FP32")


def test_element_limit() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("x has 6 elements, more than the limit of 5")):
        arrays.to_array([[1, 2, 3], [4, 5, 6]], FLOAT, "x", 5)
    with pytest.raises(InvalidArgument, match=re.escape("x has 6 elements, more than the limit of 5")):
        arrays.to_array([["a"] * 3] * 2, STRING, "x", 5)
    assert arrays.to_array([1, 2, 3, 4, 5], FLOAT, "x", 5).size == 5


def test_nesting_deeper_than_numpy_allows_is_refused() -> None:
    value: object = 1.0
    for _ in range(arrays.MAX_RANK + 1):
        value = [value]
    refused(value, FLOAT, f"x is nested deeper than {arrays.MAX_RANK} levels")


# -- JSON -> numpy: strings --


def test_strings_become_utf8_bytes_in_an_object_array() -> None:
    array = convert([["héllo", ""], ["a", "b"]], STRING)
    assert array.dtype == object
    assert array.shape == (2, 2)
    assert array.tolist() == [["héllo".encode(), b""], [b"a", b"b"]]


def test_b64_objects_become_their_decoded_bytes() -> None:
    raw = bytes(range(256))
    array = convert([{"b64": base64.b64encode(raw).decode()}, "text"], STRING)
    assert array.tolist() == [raw, b"text"]


def test_b64_without_padding_is_accepted() -> None:
    assert convert({"b64": "YWI"}, STRING).item() == b"ab"


def test_invalid_base64_is_refused() -> None:
    refused([{"b64": "!!!!"}], STRING, 'x[0]: invalid base64 in {"b64": ...}')
    refused([{"b64": "é"}], STRING, 'x[0]: invalid base64 in {"b64": ...}')
    refused([{"b64": "A"}], STRING, 'x[0]: invalid base64 in {"b64": ...}')


def test_objects_other_than_b64_are_refused_for_strings() -> None:
    refused([{"b64": "YQ==", "x": 1}], STRING, "got an object")
    refused([{"b64": 5}], STRING, "got an object")


def test_b64_objects_can_be_disallowed() -> None:
    refused(
        [{"b64": "YQ=="}],
        STRING,
        'x[0]: expected a string (BYTES), got a {"b64": ...} object',
        b64_objects=False,
        label="BYTES",
    )


def test_numbers_are_refused_for_string_tensors() -> None:
    refused(["a", 1], STRING, 'x[1]: expected a string or {"b64": ...} object (DT_STRING), got a number')
    refused([True], STRING, "got a boolean")


def test_lone_surrogates_are_refused() -> None:
    value = json_io.parse_object(b'{"a": ["\\ud800"], "n": NaN}')["a"]
    refused(value, STRING, "x[0]: is not valid Unicode text")


# -- stacking instances --


def test_stack_adds_a_batch_axis() -> None:
    array = arrays.stack([[1, 2], [3, 4], [5, 6]], FLOAT, "instances", lambda i: f"instances[{i}]", LIMIT)
    assert array.shape == (3, 2)
    assert array.dtype == np.float32


def test_stack_refuses_ragged_instances_naming_them() -> None:
    with pytest.raises(
        InvalidArgument, match=re.escape("instances[2] has a different shape than instances[0] (ragged)")
    ):
        arrays.stack([[1, 2], [3, 4], [5]], FLOAT, "instances", lambda i: f"instances[{i}]", LIMIT)


def test_stack_names_the_instance_holding_a_bad_value() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("instances[1][0]: 1.5 is not an integer (DT_INT32)")):
        arrays.stack([[1, 2], [1.5, 2]], INT32, "instances", lambda i: f"instances[{i}]", LIMIT)


def test_stack_of_strings() -> None:
    array = arrays.stack(["a", {"b64": "Yg=="}], STRING, "instances", lambda i: f"instances[{i}]", LIMIT)
    assert array.tolist() == [b"a", b"b"]


def test_stack_limits_the_total() -> None:
    with pytest.raises(InvalidArgument, match="instances has 6 elements, more than the limit of 4"):
        arrays.stack([[1, 2], [3, 4], [5, 6]], FLOAT, "instances", lambda i: f"instances[{i}]", 4)
    with pytest.raises(InvalidArgument, match="instances has more than the limit of 4 elements"):
        arrays.stack([["a"] * 2] * 3, STRING, "instances", lambda i: f"instances[{i}]", 4)


# -- V2 data --


def test_flatten_v2_data_accepts_flat_and_nested_data() -> None:
    flat = arrays.flatten_v2_data([1, 2, 3, 4], INT32, "d", LIMIT)
    nested = arrays.flatten_v2_data([[1, 2], [3, 4]], INT32, "d", LIMIT)
    assert flat.tolist() == nested.tolist() == [1, 2, 3, 4]
    assert flat.dtype == np.int32


def test_flatten_v2_data_accepts_irregular_nesting_like_triton() -> None:
    assert arrays.flatten_v2_data([[1, 2], [3], 4], FLOAT, "d", LIMIT).tolist() == [1, 2, 3, 4]


def test_flatten_v2_data_refuses_bad_elements_and_non_lists() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("d[2]: expected a number (FP32), got a string")):
        arrays.flatten_v2_data([[1, 2], ["x"]], FLOAT, "d", LIMIT, label="FP32")
    with pytest.raises(InvalidArgument, match="d must be a list, got a number"):
        arrays.flatten_v2_data(5, FLOAT, "d", LIMIT)


# -- checks --


def test_check_shape_message() -> None:
    spec = TensorSpec("features", FLOAT, (-1, 4))
    arrays.check_shape(spec, np.zeros((7, 4)))
    with pytest.raises(InvalidArgument, match=re.escape("input 'features' expects shape [-1, 4], got [1, 3]")):
        arrays.check_shape(spec, np.zeros((1, 3)))
    with pytest.raises(InvalidArgument, match=re.escape("x expects shape [-1, 4], got [4]")):
        arrays.check_shape(spec, np.zeros(4), "x")


def test_check_shape_accepts_anything_for_unknown_rank() -> None:
    arrays.check_shape(TensorSpec("t", FLOAT, None), np.zeros((2, 3, 4)))


def test_check_names() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("r names unknown input 'z'; sig has inputs 'a', 'b'")):
        arrays.check_names(["a", "z"], ["a", "b"], kind="input", where="r", owner="sig")
    with pytest.raises(InvalidArgument, match=re.escape("r is missing input 'b'; sig has inputs 'a', 'b'")):
        arrays.check_names(["a"], ["a", "b"], kind="input", where="r", owner="sig")
    arrays.check_names(["a"], ["a", "b"], kind="output", where="r", owner="sig", require_all=False)


def test_quote_cuts_long_names() -> None:
    assert arrays.quote("x" * 500) == repr("x" * 80 + "...")


# -- numpy -> JSON --


def test_float32_is_written_in_its_shortest_form() -> None:
    value = arrays.to_json_value(np.array([[0.1, 1.0], [2.5, 1e-5]], dtype=np.float32))
    assert json_io.dumps(value) == b"[[0.1,1.0],[2.5,0.00001]]"


def test_non_finite_floats_are_written_as_tf_serving_tokens() -> None:
    value = arrays.to_json_value(np.array([[0.1, np.nan], [np.inf, -np.inf]], dtype=np.float32))
    text = json_io.dumps(value)
    assert text == b"[[0.1,NaN],[Infinity,-Infinity]]"
    parsed = json.loads(text)
    assert np.isnan(parsed[0][1]) and parsed[1] == [float("inf"), float("-inf")]


def test_nan_tokens_round_trip_through_parse() -> None:
    text = b'{"a": ' + json_io.dumps(arrays.to_json_value(np.array([np.nan, 2.0]))) + b"}"
    array = convert(json_io.parse_object(text)["a"], DOUBLE)
    assert np.isnan(array[0]) and array[1] == 2.0


def test_integers_bools_and_scalars() -> None:
    assert json_io.dumps(arrays.to_json_value(np.array([[1, -2]], dtype=np.int8))) == b"[[1,-2]]"
    assert json_io.dumps(arrays.to_json_value(np.array([True, False]))) == b"[true,false]"
    assert json_io.dumps(arrays.to_json_value(np.array(2.5, dtype=np.float32))) == b"2.5"
    assert json_io.dumps(arrays.to_json_value(np.array(np.nan))) == b"NaN"
    assert json_io.dumps(arrays.to_json_value(np.array(2**64 - 1, dtype=np.uint64))) == b"18446744073709551615"


def test_non_contiguous_and_empty_arrays() -> None:
    matrix = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert json_io.dumps(arrays.to_json_value(matrix[:, 1])) == b"[1,4]"
    assert json_io.dumps(arrays.to_json_value(np.zeros((2, 0), dtype=np.float32))) == b"[[],[]]"
    assert json_io.dumps(arrays.to_json_value(np.zeros((2, 0), dtype=object))) == b"[[],[]]"


def test_strings_are_written_as_text_or_b64_objects() -> None:
    array = np.array([["héllo".encode(), b"\xff\x00"]], dtype=object)
    assert arrays.to_json_value(array) == [["héllo", {"b64": "/wA="}]]


def test_outputs_named_bytes_are_always_b64_in_tf_serving_style() -> None:
    array = np.array([b"abc"], dtype=object)
    assert arrays.to_json_value(array, "image_bytes") == [{"b64": "YWJj"}]
    assert arrays.to_json_value(array, "image") == ["abc"]


def test_base64_text_style_for_v2() -> None:
    array = np.array([b"abc", b"\xff"], dtype=object)
    assert arrays.to_json_value(array, "x_bytes", binary="base64_text") == ["abc", "/w=="]


def test_b64_round_trip() -> None:
    raw = np.array([bytes(range(256)), b"\x80abc", b"plain"], dtype=object)
    written = json_io.dumps({"v": arrays.to_json_value(raw, "data_bytes")})
    back = convert(json_io.parse_object(written)["v"], STRING)
    assert back.tolist() == raw.tolist()


def test_string_scalars_and_numpy_byte_strings() -> None:
    assert arrays.to_json_value(np.array(b"x", dtype=object)) == "x"
    assert arrays.to_json_value(np.array([b"a", b"b"], dtype="S1")) == ["a", "b"]


def test_unsupported_dtypes_are_an_internal_error() -> None:
    with pytest.raises(Internal, match="complex"):
        arrays.to_json_value(np.array([1 + 2j]), "c")
