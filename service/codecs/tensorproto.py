"""TensorFlow's TensorProto <-> numpy, both ways, for every dtype in ``service.tensors.DTYPES`` and bfloat16.

Decoding follows TensorFlow's ``Tensor::FromProto`` (tensorflow/core/framework/tensor.cc):

* ``tensor_content`` holds the raw little-endian row-major bytes; its length must be exactly the shape's element
  count times the item size (TF's ``Helper<T>::Decode`` refuses any other length).
* otherwise the typed field of the dtype (``float_val``, ``int_val``, ...) is read with ``FromProtoField``'s rule:
  fewer values than the shape needs and the last one repeats; none and the tensor is zeros (or empty strings);
  more and the extra ones are ignored (``std::copy_n(begin, n, data)``).
* DT_HALF and DT_BFLOAT16 travel in ``half_val``, each an int32 holding the 16 bits; DT_INT8/16/32, DT_UINT8/16 in
  ``int_val`` (narrowed as TF's static_cast does), DT_STRING in ``string_val``.

Element limits (``arrays.Limits``) are checked on the shape before anything is allocated. Encoding writes the
typed fields by default (what TF Serving answers, and what the official example clients read with
``.float_val``), or ``tensor_content`` when asked (TF Serving's ``--enable_serialization_as_tensor_content``);
strings always go in ``string_val``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from service.codecs.arrays import Limits, check_cost, format_shape, quote
from service.codecs.tfexample import varint
from service.errors import Internal, InvalidArgument
from service.tensors import DTYPES, DType

# tensorflow's generated messages carry no type information.
TensorProto: TypeAlias = Any

BFLOAT16_NAME = "DT_BFLOAT16"


@dataclass(frozen=True, slots=True)
class _Wire:
    """How one dtype travels in a TensorProto: its enum, its numpy dtype, its typed field and that field's type."""

    name: str
    enum: int
    numpy: np.dtype[np.generic]
    field: str
    field_numpy: np.dtype[np.generic]  # what the typed field holds before narrowing (int_val is int32)
    limit_dtype: DType | None  # the table's dtype, for its element limit (None for bfloat16, which it lacks)


def _field_of(name: str) -> tuple[str, np.dtype[np.generic]]:
    fields = {
        "DT_FLOAT": ("float_val", np.float32),
        "DT_DOUBLE": ("double_val", np.float64),
        "DT_INT64": ("int64_val", np.int64),
        "DT_UINT32": ("uint32_val", np.uint32),
        "DT_UINT64": ("uint64_val", np.uint64),
        "DT_BOOL": ("bool_val", np.bool_),
        "DT_STRING": ("string_val", object),
        "DT_HALF": ("half_val", np.int32),
        BFLOAT16_NAME: ("half_val", np.int32),
    }
    field, numpy = fields.get(name, ("int_val", np.int32))  # INT8, INT16, INT32, UINT8, UINT16
    return field, np.dtype(numpy)


def _wires() -> dict[int, _Wire]:
    table: dict[int, _Wire] = {}
    for dtype in DTYPES:
        field, field_numpy = _field_of(dtype.tf_name)
        enum = types_pb2.DataType.Value(dtype.tf_name)
        table[enum] = _Wire(dtype.tf_name, enum, dtype.numpy, field, field_numpy, dtype)
    field, field_numpy = _field_of(BFLOAT16_NAME)
    enum = types_pb2.DataType.Value(BFLOAT16_NAME)
    table[enum] = _Wire(BFLOAT16_NAME, enum, np.dtype(ml_dtypes.bfloat16), field, field_numpy, None)
    return table


_BY_ENUM = _wires()
_BY_NUMPY = {wire.numpy: wire for wire in _BY_ENUM.values()}
_HALF_FIELD = "half_val"
# The typed fields' numbers in TensorProto. An answer's field is filled by merging its packed wire form, built
# with numpy and parsed in C, instead of one Python object per value (1 MB of floats: 3 ms instead of 35).
_FIELD_NUMBERS = {
    "float_val": 5,
    "double_val": 6,
    "int_val": 7,
    "int64_val": 10,
    "bool_val": 11,
    "half_val": 13,
    "uint32_val": 16,
    "uint64_val": 17,
}
_FIXED_WIDTH = frozenset({"float_val", "double_val"})  # packed as raw little-endian values; the rest as varints
_MAX_VARINT_BYTES = 10


def dtype_name(enum: int) -> str:
    """A DataType enum as TensorFlow names it (``DT_FLOAT``), or its number when the enum has no such value."""
    try:
        return str(types_pb2.DataType.Name(enum))
    except ValueError:
        return f"DataType {enum}"


def dtype_enum(dtype: DType) -> int:
    """The DataType enum of one of the table's dtypes."""
    return int(types_pb2.DataType.Value(dtype.tf_name))


def tensor_shape(shape: Sequence[int] | None) -> Any:
    """A TensorShapeProto: -1 for an unknown dimension, ``unknown_rank`` for None (as SignatureDefs carry them)."""
    if shape is None:
        return tensor_shape_pb2.TensorShapeProto(unknown_rank=True)
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])


def _shape_of(proto: TensorProto, where: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise InvalidArgument(f"{where} has an unknown rank; a request tensor needs a full shape")
    dims = tuple(dim.size for dim in shape.dim)
    if any(size < 0 for size in dims):
        raise InvalidArgument(f"{where} has shape {format_shape(dims)}: a request tensor's dimensions must be known")
    return dims


def to_array(proto: TensorProto, where: str, limits: Limits) -> np.ndarray:
    """The numpy array a TensorProto holds; InvalidArgument naming ``where`` for anything TensorFlow would refuse.

    Strings come out as a numpy object array of bytes, bfloat16 as ``ml_dtypes.bfloat16``.
    """
    wire = _BY_ENUM.get(proto.dtype)
    if wire is None:
        raise InvalidArgument(f"{where} has dtype {dtype_name(proto.dtype)}, which is not served here")
    shape = _shape_of(proto, where)
    limit = limits.for_dtype(wire.limit_dtype) if wire.limit_dtype is not None else limits.elements
    check_cost(shape, where, limit)  # before anything of that size exists
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    content = proto.tensor_content
    if content:
        if wire.field == "string_val":
            raise InvalidArgument(f"{where} is a DT_STRING tensor in tensor_content; send its strings in string_val")
        expected = count * wire.numpy.itemsize
        if len(content) != expected:
            raise InvalidArgument(
                f"{where}: tensor_content has {len(content)} bytes, but shape {format_shape(shape)} of "
                f"{wire.name} needs {expected}"
            )
        return np.frombuffer(content, dtype=wire.numpy).reshape(shape)  # little-endian, as this host
    values = getattr(proto, wire.field)
    return _from_values(values, wire, shape, count)


def _from_values(values: Sequence[object], wire: _Wire, shape: tuple[int, ...], count: int) -> np.ndarray:
    """FromProtoField's rule: the first ``count`` values, the last one repeated when there are fewer, zeros or
    empty strings when there are none."""
    given = len(values)
    if wire.field == "string_val":
        out = np.empty(count, dtype=object)
        if count:
            taken = list(values[:count])
            out[: len(taken)] = taken
            out[len(taken) :] = taken[-1] if taken else b""
        return out.reshape(shape)
    if count == 0 or given == 0:
        return np.zeros(shape, dtype=wire.numpy)
    taken_array = np.asarray(values[:count] if given > count else values, dtype=wire.field_numpy)
    if wire.field == _HALF_FIELD:
        taken_array = taken_array.astype(np.uint16).view(wire.numpy)  # the low 16 bits are the value
    else:
        taken_array = taken_array.astype(wire.numpy, copy=False)  # int_val narrowed as TF's static_cast
    if given < count:
        taken_array = np.concatenate([taken_array, np.full(count - given, taken_array[-1], dtype=wire.numpy)])
    return taken_array.reshape(shape)


def from_array(array: np.ndarray, name: str, tensor_content: bool = False) -> TensorProto:
    """A TensorProto for an answer: typed fields, or ``tensor_content`` bytes when asked (never for strings)."""
    wire = _wire_for(array, name)
    proto = tensor_pb2.TensorProto(dtype=wire.enum, tensor_shape=tensor_shape(array.shape))
    if wire.field == "string_val":
        proto.string_val.extend(_as_bytes(item, name) for item in array.ravel().tolist())
        return proto
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=wire.numpy).tobytes()
        return proto
    flat = np.ascontiguousarray(array, dtype=wire.numpy).ravel()
    if flat.size:
        if wire.field in _FIXED_WIDTH:
            packed = flat.tobytes()
        else:
            bits = flat.view(np.uint16) if wire.field == _HALF_FIELD else flat
            packed = _varints(bits)
        number = _FIELD_NUMBERS[wire.field]
        proto.MergeFromString(varint((number << 3) | 2) + varint(len(packed)) + packed)
    return proto


def _varints(values: np.ndarray) -> bytes:
    """Integers as protobuf's packed varints, vectorized: a negative one as its 64-bit two's complement (how
    protobuf writes int32 and int64), so every value takes 1 to 10 bytes."""
    numbers = values.astype(np.int64).view(np.uint64) if values.dtype.kind in "ib" else values.astype(np.uint64)
    sizes = np.ones(numbers.shape, np.int64)
    rest = numbers >> np.uint64(7)
    while rest.any():
        sizes += rest > 0
        rest >>= np.uint64(7)
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.cumsum(sizes) - sizes
    for k in range(min(int(sizes.max()), _MAX_VARINT_BYTES)):
        has = sizes > k
        group = (numbers[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (sizes[has] > k + 1).astype(np.uint8) << 7
        out[starts[has] + k] = group.astype(np.uint8) | more
    return out.tobytes()


def _wire_for(array: np.ndarray, name: str) -> _Wire:
    if array.dtype == np.dtype(object) or array.dtype.kind in "SU":
        return _BY_NUMPY[np.dtype(object)]
    wire = _BY_NUMPY.get(array.dtype)
    if wire is None:
        raise Internal(f"output {quote(name)} has dtype {array.dtype}, which has no TensorProto form here")
    return wire


def _as_bytes(item: object, name: str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise Internal(f"output {quote(name)} holds {type(item).__name__}, not strings")
