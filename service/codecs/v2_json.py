"""Open Inference Protocol (KServe V2) REST: infer request and response, model metadata, errors.

Includes the binary tensor extension: a body may start with a JSON header of ``Inference-Header-Content-Length``
bytes, and inputs whose parameters carry ``binary_data_size`` take their values from the bytes after it, in input
order (fixed-size types as raw little-endian bytes, BYTES as 4-byte little-endian lengths each followed by that
many bytes). Outputs asked for with ``"binary_data": true`` come back the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs.arrays import (
    MAX_RANK,
    Limits,
    as_limits,
    check_cost,
    check_names,
    flatten_v2_data,
    format_shape,
    is_decimal,
    quote,
    to_json_value,
)
from service.codecs.json_io import dumps, json_type, parse_object
from service.errors import Internal, InvalidArgument
from service.tensors import DTYPES, DType, SignatureSpec, TensorSpec, dtype_from_v2_name

_OWNER = "the model"
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]
    requested_outputs: list[str] | None  # None: every output
    binary_outputs: frozenset[str] = frozenset()  # outputs to answer as raw bytes (binary extension)

    def wants_binary(self, name: str) -> bool:
        return name in self.binary_outputs or self.parameters.get("binary_data_output") is True


class _BinaryPart:
    """The bytes after the JSON header, handed out in order to the inputs that declare binary_data_size."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: object, where: str) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{where} has an invalid binary_data_size {str(size)[:40]}")
        if self._offset + size > len(self._data):
            raise InvalidArgument(
                f"{where} declares binary_data_size {size} but only {len(self._data) - self._offset} bytes remain"
            )
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def check_consumed(self) -> None:
        if self._offset != len(self._data):
            raise InvalidArgument(
                f"the binary part has {len(self._data) - self._offset} bytes that no input's binary_data_size claims"
            )


# -- request --


def parse_header_length(value: str | None, body_size: int) -> int | None:
    """The Inference-Header-Content-Length header: None when absent, else a valid offset into the body."""
    if value is None:
        return None
    text = value.strip()
    # The length check first: int() of thousands of digits is slow, and refused past 4300 of them.
    if not is_decimal(text) or len(text) > 18 or int(text) > body_size:
        raise InvalidArgument(
            f"Inference-Header-Content-Length {quote(text)} is not a length within the {body_size}-byte body"
        )
    return int(text)


def decode_infer(
    body: bytes, signature: SignatureSpec, max_elements: int | Limits, header_length: int | None = None
) -> InferRequest:
    """Parse an inference request (JSON, or JSON header + binary part) against the signature the model serves."""
    max_values = as_limits(max_elements).json_values
    if header_length is None:
        return decode_infer_header(parse_object(body, max_values), signature, max_elements)
    binary = _BinaryPart(memoryview(body)[header_length:])  # a view: slicing bytes would copy the tensors
    request = decode_infer_header(parse_object(body[:header_length], max_values), signature, max_elements, binary)
    binary.check_consumed()
    return request


def decode_infer_header(
    document: Mapping[str, Any],
    signature: SignatureSpec,
    max_elements: int | Limits,
    binary: _BinaryPart | None = None,
) -> InferRequest:
    """Validate a parsed inference request and turn its inputs into arrays of the signature's dtypes."""
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {json_type(request_id)}")
    entries = _input_entries(document)
    check_names(entries.keys(), signature.inputs.keys(), kind="input", where="the request", owner=_OWNER)
    inputs = {
        name: _input_array(entry, signature.inputs[name], max_elements, binary) for name, entry in entries.items()
    }
    requested, binary_outputs = _requested_outputs(document.get("outputs"), signature)
    return InferRequest(
        id=request_id,
        parameters=_parameters(document.get("parameters"), "the request"),
        inputs=inputs,
        requested_outputs=requested,
        binary_outputs=binary_outputs,
    )


def _parameters(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} has 'parameters' that are {json_type(value)}, not an object")
    return value


def _input_entries(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The input objects by name, each with a string name, no name twice."""
    entries = document.get("inputs")
    if not isinstance(entries, list):
        raise InvalidArgument(f"'inputs' must be a list of input objects, got {json_type(entries)}")
    by_name: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"inputs[{i}] must be an object, got {json_type(entry)}")
        name = entry.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"inputs[{i}] has no 'name' string")
        if name in by_name:
            raise InvalidArgument(f"input {quote(name)} appears more than once")
        by_name[name] = entry
    return by_name


def _input_array(
    entry: Mapping[str, Any], spec: TensorSpec, max_elements: int | Limits, binary: _BinaryPart | None
) -> np.ndarray:
    where = f"input {quote(spec.name)}"
    dtype = check_datatype(entry.get("datatype"), where, spec)
    shape = check_shape_list(entry.get("shape"), where)
    check_cost(shape, where, as_limits(max_elements).for_dtype(dtype))
    count = math.prod(shape)
    parameters = _parameters(entry.get("parameters"), where)
    if "binary_data_size" in parameters:
        if binary is None:
            raise InvalidArgument(
                f"{where} has binary data (binary_data_size), but the request has no binary part "
                "(Inference-Header-Content-Length)"
            )
        return binary_array(binary.take(parameters["binary_data_size"], where), dtype, shape, where)
    if "data" not in entry:
        raise InvalidArgument(f"{where} has no 'data'")
    flat = flatten_v2_data(entry["data"], dtype, f"{where} data", max_elements, label=dtype.v2_name)
    if flat.size != count:
        raise InvalidArgument(f"{where} has shape {format_shape(shape)} ({count} elements) but {flat.size} values")
    return flat.reshape(shape)


def binary_array(chunk: memoryview | bytes, dtype: DType, shape: tuple[int, ...], where: str) -> np.ndarray:
    """One tensor's raw bytes (the binary extension's, and V2 gRPC's raw_input_contents) as an array of ``shape``."""
    count = math.prod(shape)
    if dtype.is_string:
        items = split_bytes_elements(chunk, where, count)
        if len(items) != count:
            raise InvalidArgument(f"{where} has shape {format_shape(shape)} ({count} elements) but {len(items)} values")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    wire = dtype.numpy.newbyteorder("<")
    if len(chunk) != count * wire.itemsize:
        raise InvalidArgument(
            f"{where} has shape {format_shape(shape)} ({count} x {wire.itemsize} bytes) but {len(chunk)} bytes"
        )
    if dtype.is_bool:
        # numpy takes any non-zero byte as a bool whose byte stays as sent: 2 == True is then false, and
        # TensorFlow's results for it are undefined. The extension's BOOL is one byte, 0 or 1.
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            bad = int(np.argmax(raw > 1))
            raise InvalidArgument(
                f"{where} binary BOOL element {bad} is byte {int(raw[bad])}; BOOL bytes must be 0 or 1"
            )
    # A copy: the request buffer is not ours to keep, and TensorFlow wants native, aligned memory.
    return np.frombuffer(chunk, dtype=wire).astype(dtype.numpy).reshape(shape)


def split_bytes_elements(chunk: memoryview | bytes, where: str, count: int) -> list[bytes]:
    """BYTES in binary form: each element is a 4-byte little-endian length followed by that many bytes.

    Stops past ``count`` elements (the shape's), so a small shape cannot make millions of objects."""
    items: list[bytes] = []
    offset, end = 0, len(chunk)
    while offset < end:
        if len(items) == count:
            raise InvalidArgument(f"{where} binary BYTES data holds more than the {count} elements of its shape")
        if offset + 4 > end:
            raise InvalidArgument(f"{where} binary BYTES data ends inside an element length")
        size = int.from_bytes(chunk[offset : offset + 4], "little")
        offset += 4
        if offset + size > end:
            raise InvalidArgument(f"{where} binary BYTES element of {size} bytes runs past the data")
        items.append(bytes(chunk[offset : offset + size]))
        offset += size
    return items


def check_datatype(value: object, where: str, spec: TensorSpec) -> DType:
    """A request's datatype name, known and the one the signature declares."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} has no 'datatype' string")
    dtype = dtype_from_v2_name(value)
    if dtype is None:
        raise InvalidArgument(f"{where} has unknown datatype {quote(value)}")
    if dtype != spec.dtype:
        raise InvalidArgument(f"{where} has datatype {value}, the model expects {spec.dtype.v2_name}")
    return dtype


def check_shape_list(value: object, where: str) -> tuple[int, ...]:
    """A request's shape: at most MAX_RANK dimensions, each from 0 to 2**63-1."""
    valid = (
        isinstance(value, list)
        and len(value) <= MAX_RANK
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _INT64_MAX for d in value)
    )
    if not valid:
        shown = value if not isinstance(value, list) or len(value) <= MAX_RANK else "a list that long"
        raise InvalidArgument(
            f"{where} has an invalid shape {str(shown)[:80]}: expected a list of integers from 0 to 2**63-1"
        )
    assert isinstance(value, list)
    return tuple(value)


def _requested_outputs(value: object, signature: SignatureSpec) -> tuple[list[str] | None, frozenset[str]]:
    """The requested output names (None: all) and those asked for as binary data."""
    if value is None:
        return None, frozenset()
    if not isinstance(value, list):
        raise InvalidArgument(f"'outputs' must be a list of output objects, got {json_type(value)}")
    names: dict[str, None] = {}  # ordered, and a set for the repeat check (a list scan is quadratic)
    binary: set[str] = set()
    for i, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InvalidArgument(f"outputs[{i}] must be an object with a 'name' string")
        if name in names:
            raise InvalidArgument(f"output {quote(name)} is requested more than once")
        parameters = _parameters(entry.get("parameters"), f"output {quote(name)}")
        if "classification" in parameters:
            raise InvalidArgument(f"output {quote(name)} asks for classification, which is not supported")
        if parameters.get("binary_data") is True:
            binary.add(name)
        names[name] = None
    check_names(
        names.keys(), signature.outputs.keys(), kind="output", where="the request", owner=_OWNER, require_all=False
    )
    return list(names), frozenset(binary)


# -- response --


def encode_infer(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, DType],
    binary_outputs: Callable[[str], bool] | None = None,
) -> tuple[bytes, int | None]:
    """The inference response and, when any output travels as raw bytes, the length of its JSON header.

    JSON outputs are flat in row-major order, BYTES as UTF-8 text (else base64); binary outputs follow the JSON
    header in output order.
    """
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    blobs: list[bytes] = []
    entries = []
    for name, array in outputs.items():
        dtype = datatypes.get(name) or dtype_of(name, array)
        if binary_outputs is not None and binary_outputs(name):
            blob = binary_blob(array, dtype)
            blobs.append(blob)
            entries.append(_output_header(name, array, dtype) | {"parameters": {"binary_data_size": len(blob)}})
        else:
            entries.append(_output(name, array, dtype))
    document["outputs"] = entries
    header = dumps(document)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _output_header(name: str, array: np.ndarray, dtype: DType) -> dict[str, Any]:
    return {"name": name, "datatype": dtype.v2_name, "shape": list(array.shape)}


def _output(name: str, array: np.ndarray, dtype: DType) -> dict[str, Any]:
    if not dtype.is_string:
        array = array.astype(dtype.numpy, copy=False)
    return _output_header(name, array, dtype) | {"data": to_json_value(array.reshape(-1), name, binary="base64_text")}


def binary_blob(array: np.ndarray, dtype: DType) -> bytes:
    """An array as raw bytes: little-endian row-major, BYTES as 4-byte little-endian lengths each before its data."""
    if dtype.is_string:
        parts: list[bytes] = []
        for item in array.reshape(-1).tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += [len(data).to_bytes(4, "little"), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=dtype.numpy.newbyteorder("<")).tobytes()


def dtype_of(name: str, array: np.ndarray) -> DType:
    """An output the signature does not declare: its datatype from the array itself."""
    if array.dtype.kind in "OSU":
        return next(d for d in DTYPES if d.is_string)
    for dtype in DTYPES:
        if dtype.numpy == array.dtype:
            return dtype
    raise Internal(f"output {quote(name)} has dtype {array.dtype}, which has no Open Inference datatype")


# -- metadata --


def model_metadata(name: str, versions: list[str], platform: str, signature: SignatureSpec) -> dict[str, Any]:
    """The model metadata response body (unknown dimensions are -1; an unknown rank is given as [-1])."""
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [_tensor_metadata(spec) for spec in signature.inputs.values()],
        "outputs": [_tensor_metadata(spec) for spec in signature.outputs.values()],
    }


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = list(spec.shape) if spec.shape is not None else [-1]
    return {"name": spec.name, "datatype": spec.dtype.v2_name, "shape": shape}
