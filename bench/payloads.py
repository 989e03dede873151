"""Request bodies of the three protocols for N rows of the demo model's input, and the decoding of the answers.

* ``tfserving``: ``{"instances": [[4 floats], ...]}`` (TF Serving REST, KServe V1, the seed design, the floors);
* ``v2-json``: ``{"inputs": [{"name": "features", "shape": [N, 4], "datatype": "FP32", "data": [...]}]}``;
* ``v2-binary``: the binary tensor extension: a JSON header of ``Inference-Header-Content-Length`` bytes whose
  input carries ``"parameters": {"binary_data_size": 16N}``, then the rows as little-endian float32, and the
  output asked for with ``"parameters": {"binary_data": true}``.

The rows are fixed (a seeded generator, one decimal like Fisher's measurements), so every run sends the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = 4
CLASSES = 3
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
HEADER_LENGTH = "Inference-Header-Content-Length"
PROTOCOLS = ("tfserving", "v2-json", "v2-binary")
# Per-feature mean and spread of the Iris measurements: sepal length/width, petal length/width (cm).
_MEAN = np.array([5.84, 3.06, 3.76, 1.20])
_SPREAD = np.array([0.83, 0.44, 1.76, 0.76])


def rows(count: int) -> np.ndarray:
    """``count`` plausible measurements as float32 [count, 4]; the first rows are the same for every count."""
    generator = np.random.default_rng(20240611)
    values = np.clip(generator.normal(_MEAN, _SPREAD, size=(max(count, 64), FEATURES)), 0.1, 9.9)
    return np.round(values[:count], 1).astype(np.float32)


@dataclass(frozen=True)
class Payload:
    protocol: str
    rows: int
    body: bytes
    headers: dict[str, str]


def _json_rows(features: np.ndarray) -> list[list[float]]:
    # Through float64 of the one-decimal value, so the JSON says 5.1 and not 5.099999904632568.
    return [[round(float(value), 1) for value in row] for row in features]


def build(protocol: str, count: int) -> Payload:
    features = rows(count)
    if protocol == "tfserving":
        body = json.dumps({"instances": _json_rows(features)}, separators=(",", ":")).encode()
        return Payload(protocol, count, body, {"Content-Type": "application/json"})
    if protocol == "v2-json":
        flat = [value for row in _json_rows(features) for value in row]
        return Payload(protocol, count, *v2_json(INPUT_NAME, [count, FEATURES], flat))
    if protocol == "v2-binary":
        return Payload(protocol, count, *v2_binary(INPUT_NAME, OUTPUT_NAME, features))
    raise ValueError(f"unknown protocol {protocol!r}")


def v2_json(input_name: str, shape: list[int], flat: list[float]) -> tuple[bytes, dict[str, str]]:
    """A V2 JSON request body (and its headers) for one FP32 input given as its flat values."""
    tensor = {"name": input_name, "shape": shape, "datatype": "FP32", "data": flat}
    body = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
    return body, {"Content-Type": "application/json"}


def v2_binary(input_name: str, output_name: str, values: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A V2 binary-extension request body (and its headers): one FP32 input, ``output_name`` asked for as binary."""
    raw = values.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": input_name,
                "shape": list(values.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def decode(protocol: str, body: bytes, headers: dict[str, str]) -> np.ndarray:
    """The probabilities [N, 3] of an answer, whichever protocol; ValueError when the answer is malformed."""
    try:
        if protocol == "tfserving":
            return np.asarray(json.loads(body)["predictions"], dtype=np.float32)
        header_length = int(headers.get(HEADER_LENGTH.lower(), len(body)))
        document: dict[str, Any] = json.loads(body[:header_length])
        output = next(item for item in document["outputs"] if item["name"] == OUTPUT_NAME)
        shape = [int(size) for size in output["shape"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            offset = header_length
            for item in document["outputs"]:  # binary outputs follow the header in output order
                if item is output:
                    break
                offset += int((item.get("parameters") or {}).get("binary_data_size", 0))
            return np.frombuffer(body[offset : offset + int(size)], dtype="<f4").reshape(shape)
        return np.asarray(output["data"], dtype=np.float32).reshape(shape)
    except (KeyError, StopIteration, TypeError, ValueError) as error:
        raise ValueError(f"unreadable {protocol} answer: {error}: {body[:200]!r}") from error
