"""TF Serving's warm-up file: ``assets.extra/tf_serving_warmup_requests`` in a version folder.

A TFRecord file of ``tensorflow.serving.PredictionLog`` messages, as TF Serving reads it: each record holds a
predict, classify or regress request that the server runs before the version serves. The messages are read from
the protobuf wire format here (field numbers from tensorflow_serving/apis/*.proto) because the
``tensorflow-serving-api`` package would pull in a second, full TensorFlow; the tensors inside are TensorFlow's
own ``TensorProto``. Like TF Serving: at most 1,000 records, and a record that does not run fails the load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from service.errors import ModelLoadError

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit

# Field numbers in tensorflow_serving/apis: PredictionLog, the *Log messages, the requests, ModelSpec, Input.
_CLASSIFY_LOG, _REGRESS_LOG, _PREDICT_LOG = 2, 3, 6
_LOG_REQUEST = 1
_REQUEST_MODEL_SPEC, _PREDICT_INPUTS, _EXAMPLES_INPUT = 1, 2, 2
_SPEC_SIGNATURE_NAME = 3
_MAP_KEY, _MAP_VALUE = 1, 2
_INPUT_EXAMPLE_LIST, _EXAMPLE_LIST_EXAMPLES = 1, 1
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class WarmupRequest:
    """One record: the signature it names ("" for the default) and its inputs; ``examples`` for classify and
    regress records, whose single string input is whatever the signature calls it."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    examples: np.ndarray | None = None


def read_warmup_requests(folder: Path) -> list[WarmupRequest]:
    """The version's warm-up requests; empty when it has no warm-up file. Unreadable records are a ModelLoadError."""
    path = folder / WARMUP_FILE
    if not path.is_file():
        return []
    requests: list[WarmupRequest] = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if index >= MAX_RECORDS:
                raise ModelLoadError(f"{WARMUP_FILE} holds more than {MAX_RECORDS} records (TF Serving's limit)")
            request = _parse_prediction_log(bytes(record), index)
            if request is not None:
                requests.append(request)
    except tf.errors.OpError as error:
        raise ModelLoadError(f"{WARMUP_FILE} is not a readable TFRecord file: {error.message}") from error
    return requests


def _parse_prediction_log(record: bytes, index: int) -> WarmupRequest | None:
    where = f"{WARMUP_FILE} record {index}"
    try:
        fields = dict(_fields(record))
        if _PREDICT_LOG in fields:
            return _parse_predict(_message(fields[_PREDICT_LOG]), where)
        for number in (_CLASSIFY_LOG, _REGRESS_LOG):
            if number in fields:
                return _parse_examples(_message(fields[number]), where)
    except (ValueError, IndexError, TypeError) as error:
        raise ModelLoadError(f"{where} is not a PredictionLog message: {error}") from error
    log.warning("%s is neither a predict, classify nor regress log; skipped", where)
    return None


def _parse_predict(log_fields: bytes, where: str) -> WarmupRequest:
    request = _message(dict(_fields(log_fields)).get(_LOG_REQUEST, b""))
    inputs: dict[str, np.ndarray] = {}
    signature = ""
    for number, value in _fields(request):
        if number == _REQUEST_MODEL_SPEC:
            signature = _signature_name(_message(value))
        elif number == _PREDICT_INPUTS:
            entry = dict(_fields(_message(value)))
            name = _message(entry.get(_MAP_KEY, b"")).decode("utf-8")
            proto = tensor_pb2.TensorProto.FromString(_message(entry.get(_MAP_VALUE, b"")))
            inputs[name] = tf.make_ndarray(proto)
    if not inputs:
        raise ModelLoadError(f"{where}: a predict request without inputs")
    return WarmupRequest(signature, inputs)


def _parse_examples(log_fields: bytes, where: str) -> WarmupRequest:
    request = dict(_fields(_message(dict(_fields(log_fields)).get(_LOG_REQUEST, b""))))
    signature = _signature_name(_message(request.get(_REQUEST_MODEL_SPEC, b"")))
    input_kinds = dict(_fields(_message(request.get(_EXAMPLES_INPUT, b""))))
    if _INPUT_EXAMPLE_LIST not in input_kinds:
        raise ModelLoadError(f"{where}: only example_list inputs are supported in warm-up records")
    examples = [
        _message(value)
        for number, value in _fields(_message(input_kinds[_INPUT_EXAMPLE_LIST]))
        if number == _EXAMPLE_LIST_EXAMPLES
    ]
    return WarmupRequest(signature, {}, np.array(examples, dtype=object))


def _signature_name(model_spec: bytes) -> str:
    return _message(dict(_fields(model_spec)).get(_SPEC_SIGNATURE_NAME, b"")).decode("utf-8")


# -- the protobuf wire format ---------------------------------------------------------------------------------


def _message(value: bytes | int) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("expected a length-delimited field, found a number")
    return value


def _fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of every field of a serialized message, in order: bytes for length-delimited fields,
    int for the rest (fixed-width values as their raw little-endian integer). ``dict()`` of it keeps the last
    occurrence of each number, as protobuf does for singular fields."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, position = _varint(data, position)
            yield number, value
        elif wire_type == _BYTES:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, data[position : position + length]
            position += length
        elif wire_type in (_FIXED64, _FIXED32):
            width = 8 if wire_type == _FIXED64 else 4
            if position + width > len(data):
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, int.from_bytes(data[position : position + width], "little")
            position += width
        else:
            raise ValueError(f"unsupported wire type {wire_type} for field {number}")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
