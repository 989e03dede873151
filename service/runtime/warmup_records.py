"""TF Serving's warm-up file: ``assets.extra/tf_serving_warmup_requests`` in a version folder.

A TFRecord file of ``tensorflow.serving.PredictionLog`` messages, as TF Serving reads it: each record holds a
predict, classify or regress request that the server runs before the version serves. The records are parsed with
``tensorflow-serving-api``'s generated messages, and their tensors decoded with ``tf.make_ndarray``. Like TF
Serving: at most 1,000 records, and a record that does not parse or does not run fails the load.

Nothing in the file is trusted before it is checked: TensorFlow's own TFRecord readers crash the process on a
record whose (correctly checksummed) length is absurd, so every record header is checked here first (its length
checksum, and that the record fits in the file) and only then does ``tf.data`` read the records, checking their
data checksums; a tensor may not decode to more elements than its record has bytes (beyond a small allowance for
TF's one-value-fills-the-shape form), so no record allocates more than a small multiple of its own size.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from service.errors import ModelLoadError

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit
# A tensor may hold this many elements whatever its record's size: TF's "one value fills the shape" form.
SPLAT_ALLOWANCE = 4096

_HEADER = struct.Struct("<QI")  # TFRecord framing: length, masked CRC32C of the length; then data, CRC of data
_DATA_CRC_BYTES = 4


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
    _check_framing(path)
    requests: list[WarmupRequest] = []
    try:
        # One batch: the framing check bounds it to the file's size, and one iterator step per record costs 10x.
        batches = tf.data.TFRecordDataset(str(path)).batch(MAX_RECORDS).as_numpy_iterator()
        records = (bytes(record) for batch in batches for record in batch)
        for index, record in enumerate(records):
            request = _parse_prediction_log(record, index)
            if request is not None:
                requests.append(request)
    except tf.errors.OpError as error:
        raise ModelLoadError(f"{WARMUP_FILE} is not a readable TFRecord file: {error.message}") from error
    return requests


def _check_framing(path: Path) -> None:
    """Every record header is sound and every record ends inside the file, before TensorFlow reads any of it."""
    size = path.stat().st_size
    with path.open("rb") as file:
        for index in range(MAX_RECORDS + 1):
            header = file.read(_HEADER.size)
            if not header:
                return
            if index == MAX_RECORDS:
                raise ModelLoadError(f"{WARMUP_FILE} holds more than {MAX_RECORDS} records (TF Serving's limit)")
            if len(header) < _HEADER.size:
                raise ModelLoadError(f"{WARMUP_FILE} is not a readable TFRecord file: record {index} is cut short")
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise ModelLoadError(
                    f"{WARMUP_FILE} is not a readable TFRecord file: record {index} has a corrupt length"
                )
            end = file.tell() + length + _DATA_CRC_BYTES
            if end > size:
                raise ModelLoadError(
                    f"{WARMUP_FILE} is not a readable TFRecord file: record {index} ({length} bytes) runs past "
                    f"the end of the file"
                )
            file.seek(end)


def _parse_prediction_log(record: bytes, index: int) -> WarmupRequest | None:
    where = f"{WARMUP_FILE} record {index}"
    try:
        prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
    except DecodeError as error:
        raise ModelLoadError(f"{where} is not a PredictionLog message: {error}") from error
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        return _parse_predict(prediction_log.predict_log.request, where, len(record))
    if kind == "classify_log":
        return _parse_examples(prediction_log.classify_log.request, where)
    if kind == "regress_log":
        return _parse_examples(prediction_log.regress_log.request, where)
    # Session runs have no signature; multi-inference runs several heads at once: neither is replayed.
    log.warning("%s is neither a predict, classify nor regress log; skipped", where)
    return None


def _parse_predict(request: predict_pb2.PredictRequest, where: str, record_bytes: int) -> WarmupRequest:
    if not request.inputs:
        raise ModelLoadError(f"{where}: a predict request without inputs")
    inputs = {name: _ndarray(proto, f"{where} input {name!r}", record_bytes) for name, proto in request.inputs.items()}
    return WarmupRequest(request.model_spec.signature_name, inputs)


def _ndarray(proto: tensor_pb2.TensorProto, where: str, record_bytes: int) -> np.ndarray:
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise ModelLoadError(f"{where}: a tensor of unknown size {dims}")
    elements = int(np.prod(dims, dtype=object))
    if elements > max(record_bytes, SPLAT_ALLOWANCE):
        raise ModelLoadError(f"{where}: a tensor of {elements} elements in a record of {record_bytes} bytes")
    try:
        array: np.ndarray = tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:  # an unknown dtype, content that does not fill the shape
        raise ModelLoadError(f"{where} is not a readable tensor: {error}") from error
    return array


def _parse_examples(
    request: classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest, where: str
) -> WarmupRequest:
    if request.input.WhichOneof("kind") != "example_list":
        raise ModelLoadError(f"{where}: only example_list inputs are supported in warm-up records")
    # The signature's one input takes serialized tf.Examples.
    examples = [example.SerializeToString() for example in request.input.example_list.examples]
    return WarmupRequest(request.model_spec.signature_name, {}, np.array(examples, dtype=object))


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the Castagnoli polynomial, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C, rotated and offset so that a CRC of CRC-bearing data is not trivially zero."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
