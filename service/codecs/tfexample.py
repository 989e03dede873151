"""Serialized ``tf.train.Example`` protos, written straight from feature values (protobuf wire format).

Written here rather than through ``example_pb2`` so that classify and regress bodies can be decoded in a worker
process that never imports TensorFlow, and so that a request's ``context`` is serialized once and its bytes
prepended to each example: a map field read twice keeps its last entry per key, so the example's own features
win, which is what TF Serving's concatenation of the serialized context and example amounts to.

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }   each entry: { string key = 1; Feature value = 2; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    *List     { repeated bytes|float|int64 value = 1; }   floats and int64s packed
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Feature kinds, as the Feature message's oneof names them; "empty" is a Feature with no kind set.
KIND_FIELDS = {"bytes_list": 1, "float_list": 2, "int64_list": 3}
_UINT64 = (1 << 64) - 1


def varint(number: int) -> bytes:
    """A non-negative number as a protobuf base-128 varint."""
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return bytes([(field << 3) | 2]) + varint(len(payload)) + payload


def _values(kind: str, values: Sequence[object]) -> bytes:
    """The body of a BytesList, FloatList or Int64List."""
    if kind == "bytes_list":
        return b"".join(_length_delimited(1, value) for value in values)  # type: ignore[arg-type]
    if not values:
        return b""
    if kind == "float_list":
        return _length_delimited(1, np.asarray(values, dtype="<f4").tobytes())
    # int64: two's complement in 64 bits, as protobuf writes a negative int64.
    return _length_delimited(1, b"".join(varint(int(value) & _UINT64) for value in values))  # type: ignore[call-overload]


def feature_entry(name: bytes, kind: str, values: Sequence[object]) -> bytes:
    """One entry of the Features map: the key, and the Feature (no kind set for "empty")."""
    feature = b"" if kind == "empty" else _length_delimited(KIND_FIELDS[kind], _values(kind, values))
    return _length_delimited(1, _length_delimited(1, name) + _length_delimited(2, feature))


def example(entries: bytes) -> bytes:
    """A serialized Example from its Features map entries (``feature_entry`` results, concatenated)."""
    return _length_delimited(1, entries)
