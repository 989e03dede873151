"""TensorProto <-> numpy against TensorFlow's own ``tf.make_tensor_proto`` / ``tf.make_ndarray``, both ways, for
every dtype of service/tensors.py and bfloat16; TF's FromProtoField rule; sizes that lie; limits before allocation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2

from service.codecs.arrays import Limits
from service.codecs.tensorproto import from_array, tensor_shape, to_array
from service.errors import InvalidArgument
from service.tensors import DTYPES

LIMITS = Limits(10_000, strings=1_000)
NUMERIC = [d.numpy for d in DTYPES if not d.is_string]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


def same(left: np.ndarray, right: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (NaN and -0.0 included); strings element by element."""
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    if left.dtype == object:
        return left.tolist() == right.tolist()
    return np.ascontiguousarray(left).tobytes() == np.ascontiguousarray(right).tobytes()


def numeric_arrays() -> st.SearchStrategy[np.ndarray]:
    plain = st.sampled_from(NUMERIC).flatmap(lambda dtype: hnp.arrays(dtype, SHAPES))
    bfloat16 = hnp.arrays(np.float32, SHAPES, elements=st.floats(-1e4, 1e4, width=32)).map(
        lambda a: a.astype(ml_dtypes.bfloat16)
    )
    return st.one_of(plain, bfloat16)


def string_arrays() -> st.SearchStrategy[np.ndarray]:
    return SHAPES.flatmap(
        lambda shape: st.lists(st.binary(max_size=8), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
            lambda items: np.array([*items, b""], dtype=object)[:-1].reshape(shape)
        )
    )


@settings(max_examples=300, deadline=None)
@given(numeric_arrays() | string_arrays())
def test_what_tensorflow_encodes_decodes_to_the_same_array(array: np.ndarray) -> None:
    # make_tensor_proto uses tensor_content for most numeric arrays, typed fields for bool, strings and scalars.
    assert same(to_array(tf.make_tensor_proto(array), "input 'x'", LIMITS), array)


@settings(max_examples=300, deadline=None)
@given(numeric_arrays() | string_arrays(), st.booleans())
def test_what_this_encodes_tensorflow_decodes_to_the_same_array(array: np.ndarray, tensor_content: bool) -> None:
    proto = from_array(array, "y", tensor_content)
    assert same(tf.make_ndarray(proto), array)
    assert same(to_array(proto, "y", LIMITS), array)


@pytest.mark.parametrize("dtype", [*NUMERIC, ml_dtypes.bfloat16])
def test_answers_use_typed_fields_unless_asked_for_tensor_content(dtype: np.dtype[np.generic]) -> None:
    array = np.ones((2, 3), dtype=dtype)
    typed = from_array(array, "y")
    assert not typed.tensor_content
    assert typed.ListFields()[-1][0].name.endswith("_val")
    assert len(from_array(array, "y", tensor_content=True).tensor_content) == array.nbytes


def test_float_val_is_what_the_official_example_clients_read() -> None:
    assert list(from_array(np.array([[0.5, 0.25]], np.float32), "y").float_val) == [0.5, 0.25]


def test_half_and_bfloat16_travel_as_their_bits_in_half_val() -> None:
    half = from_array(np.array([1.0, -2.0], np.float16), "h")
    assert list(half.half_val) == [0x3C00, 0xC000]
    bfloat = from_array(np.array([1.0], ml_dtypes.bfloat16), "b")
    assert list(bfloat.half_val) == [0x3F80]
    assert to_array(bfloat, "b", LIMITS).dtype == ml_dtypes.bfloat16


def proto(dtype: tf.DType, shape: list[int], **fields: object) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, tensor_shape=tensor_shape(shape), **fields)


def test_fewer_typed_values_than_the_shape_repeat_the_last_one() -> None:
    # tensor.cc FromProtoField: copy what is there, fill the rest with the last value.
    assert to_array(proto(tf.float32, [2, 2], float_val=[1.0, 2.0]), "x", LIMITS).tolist() == [[1.0, 2.0], [2.0, 2.0]]
    assert to_array(proto(tf.string, [3], string_val=[b"a"]), "x", LIMITS).tolist() == [b"a"] * 3
    assert to_array(tf.make_tensor_proto(7, shape=[3], dtype=tf.int64), "x", LIMITS).tolist() == [7, 7, 7]


def test_no_typed_values_is_zeros_and_extra_ones_are_ignored() -> None:
    assert to_array(proto(tf.int32, [2]), "x", LIMITS).tolist() == [0, 0]
    assert to_array(proto(tf.string, [2]), "x", LIMITS).tolist() == [b"", b""]
    assert to_array(proto(tf.bool, [2]), "x", LIMITS).tolist() == [False, False]
    # copy_n(begin, n, data): values past the shape are not read, as in TensorFlow.
    assert to_array(proto(tf.float32, [2], float_val=[1.0, 2.0, 3.0]), "x", LIMITS).tolist() == [1.0, 2.0]


def test_int_val_is_narrowed_as_tensorflow_casts() -> None:
    assert to_array(proto(tf.uint8, [2], int_val=[300, -1]), "x", LIMITS).tolist() == [44, 255]


def test_tensor_content_must_be_exactly_the_shape_in_bytes() -> None:
    with pytest.raises(
        InvalidArgument, match=r"input 'x': tensor_content has 12 bytes, but shape \[2, 2\] of DT_FLOAT"
    ):
        to_array(proto(tf.float32, [2, 2], tensor_content=b"\0" * 12), "input 'x'", LIMITS)
    with pytest.raises(InvalidArgument, match="needs 16"):
        to_array(proto(tf.float32, [2, 2], tensor_content=b"\0" * 20), "input 'x'", LIMITS)


def test_unknown_dimensions_and_rank_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="must be known"):
        to_array(proto(tf.float32, [-1, 4], float_val=[1.0]), "input 'x'", LIMITS)
    unknown_rank = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
    unknown_rank.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidArgument, match="unknown rank"):
        to_array(unknown_rank, "input 'x'", LIMITS)


def test_element_limits_are_checked_before_allocating() -> None:
    # A petabyte of zeros asked for in a few bytes: refused from the shape, nothing allocated.
    with pytest.raises(InvalidArgument, match="more than the limit of 10000"):
        to_array(proto(tf.float32, [10**15]), "input 'x'", LIMITS)
    with pytest.raises(InvalidArgument, match="limit is 10000"):
        to_array(proto(tf.float32, [0, 10**12]), "input 'x'", LIMITS)
    with pytest.raises(InvalidArgument, match="more than the limit of 1000"):
        to_array(proto(tf.string, [1001], string_val=[b"a"]), "input 's'", LIMITS)


def test_unsupported_dtypes_and_strings_in_tensor_content_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="DT_COMPLEX64, which is not served here"):
        to_array(proto(tf.complex64, [1]), "input 'x'", LIMITS)
    with pytest.raises(InvalidArgument, match="string_val"):
        to_array(proto(tf.string, [1], tensor_content=b"\x01a"), "input 'x'", LIMITS)


@pytest.mark.parametrize("dtype", [*NUMERIC, ml_dtypes.bfloat16])
def test_typed_fields_are_the_bytes_protobuf_itself_writes(dtype: np.dtype[np.generic]) -> None:
    # The packed fields are built with numpy; protobuf, filling them value by value, must write the same bytes.
    if np.dtype(dtype) == np.bool_:
        array = np.array([True, False, True])
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.array([info.min, info.min // 2, 0, 1, 127, min(128, info.max), info.max], dtype=dtype)
    else:
        array = np.array([0.0, -0.0, 1.5, -300.0, np.inf, np.nan], dtype=dtype)
    ours = from_array(array, "y")
    theirs = tensor_pb2.TensorProto(dtype=ours.dtype, tensor_shape=ours.tensor_shape)
    field = ours.ListFields()[-1][0].name
    bits = array.view(np.uint16) if field == "half_val" else array
    getattr(theirs, field).extend(bits.tolist())
    assert ours.SerializeToString() == theirs.SerializeToString()
