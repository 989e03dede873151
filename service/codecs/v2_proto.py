"""Open Inference Protocol gRPC messages <-> numpy arrays, pure functions.

A request's tensors come either all as ``raw_input_contents`` (one bytes entry per input, in input order,
little-endian row-major without padding; BYTES as 4-byte little-endian lengths each followed by the data, as the
REST binary extension sends them, and decoded by the same code) or all as typed ``contents``. FP16 has no typed
field and travels only raw.

The answer rule: raw ``raw_output_contents`` when the request sent raw inputs or an output has no typed field
(FP16), else typed ``contents``. tritonclient always sends raw and reads only raw (or ``bytes_contents``), so it
always gets raw; a client that sends typed contents gets typed contents back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from service.codecs import heads
from service.codecs.arrays import Limits, check_cost, check_names, format_shape, quote
from service.codecs.v2_json import binary_array, binary_blob, check_datatype, check_shape_list, dtype_of
from service.codecs.v2_messages import ModelInferRequest, ModelInferResponse
from service.errors import InvalidArgument
from service.tensors import DType, SignatureSpec

_OWNER = "the model"

# Each datatype's typed field in InferTensorContents, and the numpy type that field holds; None: raw only.
TYPED_FIELDS: Mapping[str, tuple[str, np.dtype[Any]] | None] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP16": None,
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}


@dataclass(frozen=True, slots=True)
class ProtoInferRequest:
    """A ModelInferRequest checked against a signature: its id, parameters, arrays and requested outputs."""

    id: str
    parameters: dict[str, object]
    inputs: dict[str, np.ndarray]
    requested_outputs: list[str] | None  # None: every output
    raw: bool  # the inputs came as raw_input_contents, so the answer goes raw too


def parameters_of(parameters: Mapping[str, Any]) -> dict[str, object]:
    """An InferParameter map as plain values (bool, int, str, float); a parameter with no value set is left out."""
    values: dict[str, object] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            values[key] = getattr(parameter, kind)
    return values


def decode_request(request: Any, signature: SignatureSpec, limits: Limits) -> ProtoInferRequest:
    """Check a ModelInferRequest against the signature and turn its inputs into arrays of the signature's dtypes.

    Every count is checked before anything is allocated: the shape against the element limits, the raw entry
    count against the inputs, each raw entry's size against its shape."""
    tensors = request.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidArgument(
            f"the request has {len(raw)} raw_input_contents entries for {len(tensors)} inputs; "
            "raw_input_contents needs one entry per input, in input order"
        )
    names: dict[str, None] = {}
    for tensor in tensors:
        if tensor.name in names:
            raise InvalidArgument(f"input {quote(tensor.name)} appears more than once")
        names[tensor.name] = None
    check_names(names.keys(), signature.inputs.keys(), kind="input", where="the request", owner=_OWNER)
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(tensors):
        where = f"input {quote(tensor.name)}"
        dtype = check_datatype(tensor.datatype, where, signature.inputs[tensor.name])
        shape = check_shape_list(list(tensor.shape), where)
        check_cost(shape, where, limits.for_dtype(dtype))
        if raw:
            if tensor.contents.ListFields():
                raise InvalidArgument(
                    f"{where} has typed contents but the request uses raw_input_contents; "
                    "send every input raw or every input typed"
                )
            inputs[tensor.name] = binary_array(raw[i], dtype, shape, where)
        else:
            inputs[tensor.name] = _typed_array(tensor.contents, dtype, shape, where)
    return ProtoInferRequest(
        id=request.id,
        parameters=parameters_of(request.parameters),
        inputs=inputs,
        requested_outputs=_requested_outputs(request.outputs, signature),
        raw=bool(raw),
    )


def infer_head(data: bytes) -> Any:
    """A serialized ModelInferRequest's model_name, model_version and id, read without parsing its tensors
    (``heads``)."""
    return heads.parse(heads.ModelInferRequestHead, data, ModelInferRequest.DESCRIPTOR.full_name)


def decode_request_bytes(data: bytes, signature: SignatureSpec, limits: Limits) -> ProtoInferRequest:
    """``decode_request`` of a serialized ModelInferRequest (a codec worker's job: parse and decode)."""
    return decode_request(heads.parse(ModelInferRequest, data), signature, limits)


def _typed_array(contents: Any, dtype: DType, shape: tuple[int, ...], where: str) -> np.ndarray:
    typed = TYPED_FIELDS[dtype.v2_name]
    if typed is None:
        raise InvalidArgument(
            f"{where} has datatype {dtype.v2_name}, which has no typed contents field; send it in raw_input_contents"
        )
    field, wire = typed
    present = [descriptor.name for descriptor, _ in contents.ListFields()]
    others = [name for name in present if name != field]
    if others:
        raise InvalidArgument(
            f"{where} has datatype {dtype.v2_name} but values in {', '.join(others)}; {dtype.v2_name} values go "
            f"in {field}"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"{where} has shape {format_shape(shape)} ({count} elements) but {len(values)} values in {field}"
        )
    if dtype.is_string:
        strings = np.empty(count, dtype=object)
        strings[:] = list(values)
        return strings.reshape(shape)
    array = np.array(values, dtype=wire)
    if wire != dtype.numpy:  # INT8/16 in int32, UINT8/16 in uint32: each value must fit the narrower type
        info = np.iinfo(cast("np.dtype[np.integer[Any]]", dtype.numpy))
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            bad = int(np.argmax(outside))
            raise InvalidArgument(
                f"{where} value {int(array[bad])} at position {bad} is out of range for {dtype.v2_name} "
                f"[{int(info.min)}, {int(info.max)}]"
            )
        array = array.astype(dtype.numpy)
    return array.reshape(shape)


def _requested_outputs(outputs: Sequence[Any], signature: SignatureSpec) -> list[str] | None:
    if not outputs:
        return None
    names: dict[str, None] = {}  # ordered, and a set for the repeat check
    for output in outputs:
        if output.name in names:
            raise InvalidArgument(f"output {quote(output.name)} is requested more than once")
        names[output.name] = None
    check_names(
        names.keys(), signature.outputs.keys(), kind="output", where="the request", owner=_OWNER, require_all=False
    )
    return list(names)


def answers_raw(request_raw: bool, datatypes: Sequence[DType]) -> bool:
    """Raw output when the request was raw or some output has no typed field (the rule in the module doc)."""
    return request_raw or any(TYPED_FIELDS[d.v2_name] is None for d in datatypes)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, DType],
    request_raw: bool,
) -> Any:
    """A ModelInferResponse with the outputs in order; ``datatypes`` are the signature's (an output it does not
    declare takes the array's own)."""
    response = ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    types = {name: datatypes.get(name) or dtype_of(name, array) for name, array in outputs.items()}
    raw = answers_raw(request_raw, list(types.values()))
    for name, array in outputs.items():
        dtype = types[name]
        tensor = response.outputs.add(name=name, datatype=dtype.v2_name, shape=array.shape)
        if raw:
            response.raw_output_contents.append(binary_blob(array, dtype))
            continue
        typed = TYPED_FIELDS[dtype.v2_name]
        assert typed is not None  # answers_raw chose raw otherwise
        field, _ = typed
        if dtype.is_string:
            values: list[Any] = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]
        else:
            values = array.astype(dtype.numpy, copy=False).reshape(-1).tolist()
        getattr(tensor.contents, field).extend(values)
    return response


def encode_response_bytes(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, DType],
    request_raw: bool,
) -> bytes:
    """``encode_response`` serialized (a codec worker's job: build and serialize)."""
    response = encode_response(model_name, model_version, request_id, outputs, datatypes, request_raw)
    return bytes(response.SerializeToString())


# ModelStreamInferResponse.infer_response's field number: an answer serialized in a worker is wrapped as it is.
STREAM_INFER_RESPONSE_FIELD = 2


def stream_response_bytes(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse holding one serialized ModelInferResponse, built without parsing it."""
    return heads.field_bytes(STREAM_INFER_RESPONSE_FIELD, infer_response)
