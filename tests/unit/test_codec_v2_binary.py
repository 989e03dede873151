"""The Open Inference Protocol's binary tensor extension: JSON header + raw little-endian tensors."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest

from service.codecs import v2_json
from service.errors import InvalidArgument
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
INT64 = dtype_from_tf_name("DT_INT64")
STRING = dtype_from_tf_name("DT_STRING")
SIGNATURE = SignatureSpec(
    "serving_default",
    PREDICT_METHOD,
    {
        "x": TensorSpec("x", FLOAT, (-1, 2)),
        "ids": TensorSpec("ids", INT64, (-1,)),
        "text": TensorSpec("text", STRING, (-1,)),
    },
    {"y": TensorSpec("y", FLOAT, (-1, 2)), "label": TensorSpec("label", STRING, (-1,))},
)


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def request(header: dict[str, object], *blobs: bytes) -> tuple[bytes, int]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), len(head)


def test_binary_inputs_are_read_in_order_and_mixed_with_json() -> None:
    x = np.array([[1.5, 2.5], [3.5, -4.0]], dtype="<f4")
    text = bytes_elements(b"ab", "h\u00e9".encode())
    header = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": x.nbytes}},
            {"name": "ids", "datatype": "INT64", "shape": [2], "data": [7, 8]},
            {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(text)}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "label"}],
    }
    body, length = request(header, x.tobytes(), text)
    decoded = v2_json.decode_infer(body, SIGNATURE, 1000, length)
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.inputs["x"].dtype == np.float32
    assert decoded.inputs["ids"].tolist() == [7, 8]
    assert decoded.inputs["text"].tolist() == [b"ab", "h\u00e9".encode()]
    assert decoded.wants_binary("y")
    assert not decoded.wants_binary("label")


@pytest.mark.parametrize(
    ("size", "blob", "needle"),
    [
        (12, b"\x00" * 12, "bytes"),  # 3 floats for a [2, 2] tensor
        (20, b"\x00" * 16, "remain"),  # declares more than there is
        (16, b"\x00" * 20, "claims"),  # leftover bytes nobody declared
        (-1, b"", "binary_data_size"),
    ],
)
def test_binary_sizes_that_lie_are_refused(size: int, blob: bytes, needle: str) -> None:
    header = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": size}},
            {"name": "ids", "datatype": "INT64", "shape": [0], "data": []},
            {"name": "text", "datatype": "BYTES", "shape": [0], "data": []},
        ]
    }
    body, length = request(header, blob)
    with pytest.raises(InvalidArgument, match=needle):
        v2_json.decode_infer(body, SIGNATURE, 1000, length)


def test_bytes_element_running_past_the_data_is_refused() -> None:
    text = struct.pack("<I", 50) + b"short"
    header = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [0, 2], "data": []},
            {"name": "ids", "datatype": "INT64", "shape": [0], "data": []},
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(text)}},
        ]
    }
    body, length = request(header, text)
    with pytest.raises(InvalidArgument, match="runs past"):
        v2_json.decode_infer(body, SIGNATURE, 1000, length)


@pytest.mark.parametrize("value", ["abc", "-1", "999999"])
def test_header_length_must_fit_the_body(value: str) -> None:
    with pytest.raises(InvalidArgument, match="Inference-Header-Content-Length"):
        v2_json.parse_header_length(value, 100)
    assert v2_json.parse_header_length(None, 100) is None
    assert v2_json.parse_header_length("100", 100) == 100


def test_binary_outputs_follow_the_json_header() -> None:
    y = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    label = np.array([b"a", b"bcd"], dtype=object)
    body, length = v2_json.encode_infer(
        "m", "2", None, {"y": y, "label": label}, {"y": FLOAT, "label": STRING}, lambda name: True
    )
    assert length is not None
    header = json.loads(body[:length])
    entries = {o["name"]: o for o in header["outputs"]}
    assert "data" not in entries["y"]
    assert entries["y"]["parameters"]["binary_data_size"] == 16
    assert entries["y"]["shape"] == [2, 2]
    rest = body[length:]
    np.testing.assert_array_equal(np.frombuffer(rest[:16], dtype="<f4").reshape(2, 2), y)
    assert rest[16:] == bytes_elements(b"a", b"bcd")
    assert entries["label"]["parameters"]["binary_data_size"] == len(rest) - 16
