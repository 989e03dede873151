"""Open Inference Protocol (KServe V2) REST JSON: infer request and response, model metadata, errors.

The binary tensor extension will reuse ``decode_infer_header``: its body starts with the same JSON object (of
``Inference-Header-Content-Length`` bytes), and inputs whose parameters carry ``binary_data_size`` take their
values from the bytes after it instead of from ``data``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs.arrays import (
    MAX_RANK,
    check_names,
    flatten_v2_data,
    format_shape,
    quote,
    to_json_value,
)
from service.codecs.json_io import dumps, error_body, json_type, parse_object
from service.errors import Internal, InvalidArgument
from service.tensors import DTYPES, DType, SignatureSpec, TensorSpec, dtype_from_v2_name

_OWNER = "the model"


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]
    requested_outputs: list[str] | None  # None: every output


def encode_error(message: str) -> bytes:
    return error_body(message)


# -- request --


def decode_infer(body: bytes, signature: SignatureSpec, max_elements: int) -> InferRequest:
    """Parse an inference request body (JSON only) against the signature the model serves."""
    return decode_infer_header(parse_object(body), signature, max_elements)


def decode_infer_header(document: Mapping[str, Any], signature: SignatureSpec, max_elements: int) -> InferRequest:
    """Validate a parsed inference request and turn its inputs into arrays of the signature's dtypes."""
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {json_type(request_id)}")
    entries = _input_entries(document)
    check_names(entries.keys(), signature.inputs.keys(), kind="input", where="the request", owner=_OWNER)
    inputs = {name: _input_array(entry, signature.inputs[name], max_elements) for name, entry in entries.items()}
    return InferRequest(
        id=request_id,
        parameters=_parameters(document.get("parameters"), "the request"),
        inputs=inputs,
        requested_outputs=_requested_outputs(document.get("outputs"), signature),
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


def _input_array(entry: Mapping[str, Any], spec: TensorSpec, max_elements: int) -> np.ndarray:
    where = f"input {quote(spec.name)}"
    dtype = _datatype(entry.get("datatype"), where, spec)
    shape = _shape(entry.get("shape"), where)
    count = math.prod(shape)
    if count > max_elements:
        raise InvalidArgument(f"{where} has {count} elements, more than the limit of {max_elements}")
    if "binary_data_size" in _parameters(entry.get("parameters"), where):
        raise InvalidArgument(
            f"{where} has binary data (binary_data_size), but the request has no binary part "
            "(Inference-Header-Content-Length)"
        )
    if "data" not in entry:
        raise InvalidArgument(f"{where} has no 'data'")
    flat = flatten_v2_data(entry["data"], dtype, f"{where} data", max_elements, label=dtype.v2_name)
    if flat.size != count:
        raise InvalidArgument(f"{where} has shape {format_shape(shape)} ({count} elements) but {flat.size} values")
    return flat.reshape(shape)


def _datatype(value: object, where: str, spec: TensorSpec) -> DType:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} has no 'datatype' string")
    dtype = dtype_from_v2_name(value)
    if dtype is None:
        raise InvalidArgument(f"{where} has unknown datatype {quote(value)}")
    if dtype != spec.dtype:
        raise InvalidArgument(f"{where} has datatype {value}, the model expects {spec.dtype.v2_name}")
    return dtype


def _shape(value: object, where: str) -> tuple[int, ...]:
    valid = (
        isinstance(value, list)
        and len(value) <= MAX_RANK
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    )
    if not valid:
        shown = value if not isinstance(value, list) or len(value) <= MAX_RANK else "a list that long"
        raise InvalidArgument(
            f"{where} has an invalid shape {str(shown)[:80]}: expected a list of non-negative integers"
        )
    assert isinstance(value, list)
    return tuple(value)


def _requested_outputs(value: object, signature: SignatureSpec) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(f"'outputs' must be a list of output objects, got {json_type(value)}")
    names: list[str] = []
    for i, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InvalidArgument(f"outputs[{i}] must be an object with a 'name' string")
        if name in names:
            raise InvalidArgument(f"output {quote(name)} is requested more than once")
        if "classification" in _parameters(entry.get("parameters"), f"output {quote(name)}"):
            raise InvalidArgument(f"output {quote(name)} asks for classification, which is not supported")
        names.append(name)
    check_names(names, signature.outputs.keys(), kind="output", where="the request", owner=_OWNER, require_all=False)
    return names


# -- response --


def encode_infer(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, DType],
) -> bytes:
    """The inference response: every output flat in row-major order, BYTES as UTF-8 text (else base64)."""
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = [
        _output(name, array, datatypes.get(name) or _dtype_of(name, array)) for name, array in outputs.items()
    ]
    return dumps(document)


def _output(name: str, array: np.ndarray, dtype: DType) -> dict[str, Any]:
    if not dtype.is_string:
        array = array.astype(dtype.numpy, copy=False)
    return {
        "name": name,
        "datatype": dtype.v2_name,
        "shape": list(array.shape),
        "data": to_json_value(array.reshape(-1), name, binary="base64_text"),
    }


def _dtype_of(name: str, array: np.ndarray) -> DType:
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
