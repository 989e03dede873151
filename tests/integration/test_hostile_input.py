"""Hostile input: every malformed request gets a 4xx with a clear one-line message, never a 5xx or a hang.

Extends test_bad_input.py (which covers the basic cases in-process) with a larger corpus, run twice: in-process
and against the real server process (uvicorn, the fast lane, the whole stack). Malformed HTTP that no client
library sends goes over raw sockets to the real server. After each run the server must still be healthy: ready,
answering a good request, and no 5xx counted in /metrics.

NaN, Infinity and -Infinity are valid float values where TF Serving accepts them (its JSON parser takes them).
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from apptools import ServerProcess, publish, running_app, running_server
from rawhttp import chunked, exchange, post
from service.repository.local import LocalRepository
from service.settings import Settings

MAX_BODY = 256 * 1024
MAX_ELEMENTS = 10_000
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
CLIENT_TIMEOUT_S = 15.0
MAX_MESSAGE_CHARS = 1000

PREDICT = "/v1/models/iris:predict"
INFER = "/v2/models/iris/infer"
MULTI_PREDICT = "/v1/models/multi:predict"
MULTI_INFER = "/v2/models/multi/infer"
GOOD = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
JSON_TYPE = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    path: str
    body: bytes | None  # None: a GET
    status: int
    needle: str = ""  # a word the error message must contain (case-insensitive)
    headers: dict[str, str] = field(default_factory=dict)


def v2(*inputs: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def features(data: object, shape: object = (1, 4), datatype: str = "FP32", **extra: object) -> dict[str, object]:
    """The iris input; ``data=None`` leaves 'data' out, a tuple ``shape`` becomes a list."""
    entry = {"name": "features", "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": datatype}
    return entry | ({"data": data} if data is not None else {}) | extra


def multi_v2(ids: object, tokens: object, ids_type: str = "INT64") -> bytes:
    return v2(
        {"name": "ids", "shape": [1, 1], "datatype": ids_type, "data": ids},
        {"name": "tokens", "shape": [1], "datatype": "BYTES", "data": tokens},
    )


def multi_row(ids: str, tokens: str) -> bytes:
    return f'{{"instances": [{{"ids": {ids}, "tokens": {tokens}}}]}}'.encode()


def binary(
    header: dict[str, object], data: bytes, header_length: int | str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body and its headers; ``header_length`` overrides the true JSON header length."""
    encoded = json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return encoded + data, {"inference-header-content-length": str(length), "content-type": "application/octet-stream"}


FOUR_FLOATS = struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)


def binary_case(
    declared_size: object, data: bytes, status: int, needle: str, header_length: int | str | None = None
) -> Case:
    header = {"inputs": [features(None, parameters={"binary_data_size": declared_size})]}
    body, headers = binary(header, data, header_length)
    return Case(INFER, body, status, needle, headers)


def binary_shape_case(shape: tuple[int, ...]) -> Case:
    body, headers = binary({"inputs": [features(None, shape=shape, parameters={"binary_data_size": 0})]}, b"")
    return Case(INFER, body, 400, "shape", headers)


def bytes_element_case(data: bytes, needle: str) -> Case:
    header = {
        "inputs": [
            {"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [1]},
            {"name": "tokens", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(data)}},
        ]
    }
    body, headers = binary(header, data)
    return Case(MULTI_INFER, body, 400, needle, headers)


CORPUS: dict[str, Case] = {
    # -- broken and deeply nested JSON (beyond test_bad_input's array nesting and truncation) --
    "nested objects": Case(PREDICT, b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "nested"),
    "nested with NaN (fallback parser)": Case(
        PREDICT, b'{"instances":' + b"[" * 3000 + b"NaN" + b"]" * 3000 + b"}", 400, "nested"
    ),
    "nested V2 data": Case(INFER, v2(features(json.loads("[" * 100 + "1" + "]" * 100))), 400, "nested"),
    "escapes with NaN": Case(PREDICT, b'{"x": "' + b'\\"' * 50_000 + b'", "instances": [[NaN, 1, 2, 3]]', 400, "JSON"),
    "invalid UTF-8": Case(PREDICT, b'{"instances": [[1, 2, 3, 4]], "x": "\xff\xfe"}', 400, "JSON"),
    "invalid UTF-8 with NaN": Case(PREDICT, b'{"instances": [[NaN, 2, 3, 4]], "x": "\xff"}', 400, "JSON"),
    "UTF-16": Case(PREDICT, GOOD.decode().encode("utf-16"), 400, "JSON"),
    "byte order mark": Case(PREDICT, b"\xef\xbb\xbf" + GOOD, 400, "JSON"),
    "trailing garbage": Case(PREDICT, GOOD + b" }{", 400, "JSON"),
    "lone surrogate": Case(MULTI_PREDICT, multi_row("[[1]]", '"\\ud800"'), 400, "JSON"),
    "lone surrogate with NaN": Case(
        MULTI_PREDICT, b'{"instances": [{"ids": [1], "tokens": "\\udfff"}], "z": NaN}', 400, "Unicode"
    ),
    "top-level string": Case(PREDICT, b'"' + b"a" * 100_000 + b'"', 400, "object"),
    "top-level null": Case(INFER, b"null", 400, "object"),
    "number overflow": Case(PREDICT, b'{"instances": [[1e400, 1, 2, 3]]}', 400, "JSON"),
    "inputs not a list": Case(INFER, b'{"inputs": {"features": [1, 2, 3, 4]}}', 400, "inputs"),
    "input entry not an object": Case(INFER, b'{"inputs": [[1, 2, 3, 4]]}', 400, "inputs[0]"),
    "input without name": Case(INFER, v2({"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}), 400, "name"),
    "input twice": Case(INFER, v2(features([1, 2, 3, 4]), features([1, 2, 3, 4])), 400, "more than once"),
    "id not a string": Case(INFER, v2(features([1, 2, 3, 4]), id=42), 400, "id"),
    "outputs not a list": Case(INFER, v2(features([1, 2, 3, 4]), outputs="probabilities"), 400, "outputs"),
    "unknown output": Case(INFER, v2(features([1, 2, 3, 4]), outputs=[{"name": "nope"}]), 400, "nope"),
    "signature_name not a string": Case(
        PREDICT, b'{"signature_name": 7, "instances": [[1, 2, 3, 4]]}', 400, "signature"
    ),
    "huge signature_name": Case(
        PREDICT, b'{"signature_name": "' + b"s" * 200_000 + b'", "instances": [[1,2,3,4]]}', 400, "signature"
    ),
    "unknown signature": Case(
        PREDICT, b'{"signature_name": "../../etc", "instances": [[1, 2, 3, 4]]}', 400, "signature"
    ),
    # -- huge bodies --
    "body over the limit": Case(
        PREDICT, b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 15_000 + b"[1,2,3,4]]}", 413, "limit"
    ),
    "V2 body over the limit": Case(INFER, v2(features([0.5] * 70_000, shape=(17_500, 4))), 413, "limit"),
    # -- compressed bodies: refused, never inflated --
    "deflate bomb": Case(
        PREDICT, zlib.compress(b"[" * 5_000_000), 415, "Content-Encoding", {"content-encoding": "deflate"}
    ),
    "gzip on V2": Case(
        INFER, gzip.compress(v2(features([1, 2, 3, 4]))), 415, "Content-Encoding", {"content-encoding": "gzip"}
    ),
    "brotli": Case(PREDICT, b"\x1b\xff\xff\x0f" * 8, 415, "Content-Encoding", {"content-encoding": "br"}),
    "zstd": Case(PREDICT, b"(\xb5/\xfd" + b"\x00" * 16, 415, "Content-Encoding", {"content-encoding": "zstd"}),
    "upper-case GZIP": Case(PREDICT, gzip.compress(GOOD), 415, "Content-Encoding", {"content-encoding": "GZIP"}),
    "encoding list": Case(
        PREDICT, gzip.compress(GOOD), 415, "Content-Encoding", {"content-encoding": "identity, gzip"}
    ),
    # -- wrong dtypes --
    "V2 datatype mismatch": Case(INFER, v2(features([1, 2, 3, 4], datatype="INT8")), 400, "FP32"),
    "V2 unknown datatype": Case(INFER, v2(features([1, 2, 3, 4], datatype="FP128")), 400, "datatype"),
    "V2 lower-case datatype": Case(INFER, v2(features([1, 2, 3, 4], datatype="fp32")), 400, "datatype"),
    "V2 datatype missing": Case(
        INFER, v2({"name": "features", "shape": [1, 4], "data": [1, 2, 3, 4]}), 400, "datatype"
    ),
    "V2 string for float": Case(INFER, v2(features([1, 2, "3", 4])), 400, "number"),
    "V2 bool for float": Case(INFER, v2(features([1, 2, True, 4])), 400, "number"),
    "V2 null for float": Case(INFER, v2(features([1, 2, None, 4])), 400, "number"),
    "V2 number for BYTES": Case(MULTI_INFER, multi_v2([1], [5]), 400, "string"),
    "V2 float for INT64": Case(MULTI_INFER, multi_v2([1.5], ["a"]), 400, "integer"),
    "V2 INT64 overflow": Case(MULTI_INFER, multi_v2([2**63], ["a"]), 400, "range"),
    "V2 huge integer": Case(MULTI_INFER, multi_v2([10**30], ["a"]), 400, "range"),
    "row float for int64": Case(MULTI_PREDICT, multi_row("[1.5]", '"a"'), 400, "integer"),
    "row int64 overflow": Case(MULTI_PREDICT, multi_row("[9223372036854775808]", '"a"'), 400, "range"),
    "row NaN for int64": Case(MULTI_PREDICT, multi_row("[NaN]", '"a"'), 400, "integer"),
    "row number for string": Case(MULTI_PREDICT, multi_row("[1]", "42"), 400, "string"),
    "row object for float": Case(PREDICT, b'{"instances": [[{"a": 1}, 2, 3, 4]]}', 400, "number"),
    "row b64 for float": Case(PREDICT, b'{"instances": [[{"b64": "AAAA"}, 2, 3, 4]]}', 400, "b64"),
    "lower-case nan token": Case(PREDICT, b'{"instances": [[nan, 1, 2, 3]]}', 400, "JSON"),
    "inf token": Case(PREDICT, b'{"instances": [[inf, 1, 2, 3]]}', 400, "JSON"),
    # -- ragged and oversized tensors, shapes that lie --
    "row ragged objects": Case(
        MULTI_PREDICT, b'{"instances": [{"ids": [1], "tokens": "a"}, {"ids": [1, 2], "tokens": "b"}]}', 400, "ragged"
    ),
    "row missing key": Case(
        MULTI_PREDICT, b'{"instances": [{"ids": [1], "tokens": "a"}, {"ids": [2]}]}', 400, "tokens"
    ),
    "row scalar for matrix": Case(PREDICT, b'{"instances": [5.1]}', 400, "shape"),
    "columnar ragged": Case(PREDICT, b'{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}', 400, "ragged"),
    "too many rows": Case(PREDICT, b'{"instances": [' + b"[1,2,3,4]," * 2600 + b"[1,2,3,4]]}", 400, "elements"),
    "V2 shape beyond int64": Case(INFER, v2(features([1], shape=(2**62, 2**62, 2**62))), 400, "elements"),
    "V2 shape of 65 dims": Case(INFER, v2(features([1], shape=[1] * 65)), 400, "shape"),
    "V2 float in shape": Case(INFER, v2(features([1, 2, 3, 4], shape=[1.0, 4])), 400, "shape"),
    "V2 bool in shape": Case(INFER, v2(features([1, 2, 3, 4], shape=[True, 4])), 400, "shape"),
    "V2 shape not a list": Case(INFER, v2(features([1, 2, 3, 4], shape="1,4")), 400, "shape"),
    "V2 shape bigger than data": Case(INFER, v2(features([1, 2, 3, 4], shape=(2, 4))), 400, "4 values"),
    "V2 shape smaller than data": Case(INFER, v2(features(list(range(12)), shape=(2, 4))), 400, "12 values"),
    "V2 shape the model refuses": Case(INFER, v2(features([1, 2, 3], shape=(1, 3))), 400, "shape"),
    "V2 data not a list": Case(INFER, v2(features("1,2,3,4")), 400, "list"),
    "V2 data missing": Case(INFER, v2(features(None)), 400, "data"),
    # -- shapes with a zero and a huge dimension, and the rest of that class: 400, never 500 --
    "V2 zero and a 2**63 dimension": Case(INFER, v2(features([], shape=(0, 2**63))), 400, "shape"),
    "V2 2**63 and a zero dimension": Case(INFER, v2(features([], shape=(2**63, 0))), 400, "shape"),
    "V2 zero and a dimension past int64": Case(INFER, v2(features([], shape=(0, 2**64))), 400, "shape"),
    "V2 zero and dimensions overflowing int64": Case(INFER, v2(features([], shape=(0, 2**62, 2**62))), 400, "shape"),
    "V2 zero and a dimension past the limit": Case(INFER, v2(features([], shape=(0, 10**9))), 400, "shape"),
    "V2 negative dimension": Case(INFER, v2(features([1, 2, 3, 4], shape=(-1, 4))), 400, "shape"),
    "binary zero and a 2**63 dimension": binary_shape_case((0, 2**63)),
    "binary zero and dimensions overflowing int64": binary_shape_case((0, 2**62, 8)),
    "TF Serving rows of nothing": Case(
        MULTI_PREDICT, b'{"inputs": {"ids": [' + b"[]," * 12_000 + b'[]], "tokens": ["a"]}}', 400, "elements"
    ),
    "TF Serving columnar rows of nothing": Case(PREDICT, b'{"inputs": [' + b"[]," * 20_000 + b"[]]}", 400, "zero"),
    # -- messages stay short whatever the request names --
    "V2 thousands of unknown outputs": Case(
        INFER,
        v2(features([1, 2, 3, 4]), outputs=[{"name": f"o{i}-" + "\u0000" * 10} for i in range(2000)]),
        400,
        "unknown output",
    ),
    "row thousands of unknown inputs": Case(
        PREDICT,
        json.dumps({"instances": [{f"in{i}" + "y" * 50: 1 for i in range(2000)}]}).encode(),
        400,
        "does not have named input",
    ),
    # -- V2 binary extension: lengths that lie --
    "binary header length past the body": binary_case(16, FOUR_FLOATS, 400, "Inference-Header-Content-Length", 10_000),
    "binary header length negative": binary_case(16, FOUR_FLOATS, 400, "Inference-Header-Content-Length", "-1"),
    "binary header length not a number": binary_case(16, FOUR_FLOATS, 400, "Inference-Header-Content-Length", "0x10"),
    "binary header length of 5000 digits": binary_case(
        16, FOUR_FLOATS, 400, "Inference-Header-Content-Length", "9" * 5000
    ),
    "binary header length cuts the JSON": binary_case(16, FOUR_FLOATS, 400, "JSON", 20),
    "binary_data_size past the data": binary_case(1600, FOUR_FLOATS, 400, "remain"),
    "binary_data_size short of the tensor": binary_case(8, FOUR_FLOATS, 400, "bytes"),
    "binary_data_size negative": binary_case(-16, FOUR_FLOATS, 400, "binary_data_size"),
    "binary_data_size a float": binary_case(16.0, FOUR_FLOATS, 400, "binary_data_size"),
    "binary_data_size a string": binary_case("16", FOUR_FLOATS, 400, "binary_data_size"),
    "binary_data_size true": binary_case(True, FOUR_FLOATS, 400, "binary_data_size"),
    "binary_data_size huge": binary_case(10**30, FOUR_FLOATS, 400, "binary_data_size"),
    "binary bytes nobody claims": binary_case(16, FOUR_FLOATS + b"\x00" * 7, 400, "claims"),
    "binary without the length header": Case(
        INFER, v2(features(None, parameters={"binary_data_size": 16})), 400, "binary"
    ),
    "binary BYTES length past the data": bytes_element_case(struct.pack("<I", 4_000_000_000) + b"abcd", "runs past"),
    "binary BYTES cut inside a length": bytes_element_case(b"\x01\x00", "length"),
    # -- invalid base64 --
    "b64 bad characters": Case(MULTI_PREDICT, multi_row("[1]", '{"b64": "!!!!"}'), 400, "base64"),
    "b64 non-ASCII": Case(MULTI_PREDICT, multi_row("[1]", '{"b64": "\u00e9t\u00e9"}'), 400, "base64"),
    "b64 impossible length": Case(MULTI_PREDICT, multi_row("[1]", '{"b64": "A"}'), 400, "base64"),
    "b64 not a string": Case(MULTI_PREDICT, multi_row("[1]", '{"b64": 12}'), 400, "string"),
    "b64 with another key": Case(MULTI_PREDICT, multi_row("[1]", '{"b64": "aGk=", "x": 1}'), 400, "string"),
    "b64 object in V2 JSON": Case(MULTI_INFER, multi_v2([1], [{"b64": "aGk="}]), 400, "string"),
    # -- model names, versions and labels that try to escape or confuse --
    # The test client decodes the path twice (no route: "Not Found"), uvicorn once (an unknown model).
    "double-encoded traversal": Case("/v1/models/%252e%252e%252fetc%252fpasswd:predict", GOOD, 404, "not"),
    "encoded traversal V2": Case("/v2/models/..%2F..%2Fetc%2Fpasswd/infer", GOOD, 404, ""),
    "NUL in model name": Case("/v1/models/iris%00:predict", GOOD, 404, "Servable not found for request: Latest(iris"),
    "NUL in V2 model name": Case("/v2/models/iris%00.json/infer", GOOD, 404, "not served"),
    "overlong UTF-8 dot": Case("/v1/models/%C0%AE%C0%AE:predict", GOOD, 404, "Servable not found for request"),
    "invalid UTF-8 name": Case("/v2/models/%FF%FE/infer", GOOD, 404, "not served"),
    "very long model name": Case("/v1/models/" + "m" * 8000 + ":predict", GOOD, 404, "Servable not found for request"),
    "very long unicode name": Case("/v2/models/" + "%E2%98%83" * 2000 + "/infer", GOOD, 404, "not served"),
    "NUL version": Case("/v1/models/iris/versions/%00:predict", GOOD, 400, "version"),
    "full-width digit version": Case("/v1/models/iris/versions/%EF%BC%91:predict", GOOD, 400, "version"),
    "superscript version": Case("/v2/models/iris/versions/%C2%B2/infer", GOOD, 400, "version"),
    "circled digit version": Case("/v1/models/iris/versions/%E2%91%A0", None, 400, "version"),
    "negative version": Case("/v1/models/iris/versions/-1:predict", GOOD, 400, "version"),
    "hex version": Case("/v2/models/iris/versions/0x1/infer", GOOD, 400, "version"),
    "signed version": Case("/v2/models/iris/versions/+1/ready", None, 400, "version"),
    "version beyond int64": Case("/v1/models/iris/versions/99999999999999999999999:predict", GOOD, 400, "version"),
    "very long version": Case("/v1/models/iris/versions/" + "9" * 5000 + "/metadata", None, 400, "version"),
    "NUL label": Case("/v1/models/iris/labels/%00:predict", GOOD, 400, "Unrecognized servable version label"),
    "traversal label": Case(
        "/v1/models/iris/labels/..%2F..%2F:predict", GOOD, 400, "Unrecognized servable version label: ..%2F..%2F"
    ),
    "very long label": Case(
        "/v1/models/iris/labels/" + "%E2%98%83" * 2000 + "/metadata", None, 400, "Unrecognized servable version label"
    ),
    "status of a NUL name": Case("/v1/models/%00", None, 404, "Could not find any versions of model"),
    "metadata of a long name": Case("/v2/models/" + "x" * 8000, None, 404, "not served"),
    # -- NaN and Infinity: valid float values, as in TF Serving --
    "NaN row": Case(PREDICT, b'{"instances": [[NaN, Infinity, -Infinity, 1.0]]}', 200),
    "NaN columnar": Case(PREDICT, b'{"inputs": {"features": [[NaN, 3.5, 1.4, -Infinity]]}}', 200),
    "NaN V2": Case(
        INFER,
        b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, Infinity, 2]}]}',
        200,
    ),
    "binary float NaN": binary_case(16, struct.pack("<4f", float("nan"), 1, 2, float("inf")), 200, ""),
}


def check_answer(response: httpx.Response, case: Case) -> None:
    assert response.status_code == case.status, response.text[:300]
    document = response.json()
    if case.status == 200:
        assert "predictions" in document or "outputs" in document
        return
    message = document["error"]
    assert isinstance(message, str)
    assert message
    assert "\n" not in message
    assert len(message) < MAX_MESSAGE_CHARS, message[:200]
    assert case.needle.lower() in message.lower(), message


def send(client: httpx.Client, case: Case) -> httpx.Response:
    if case.body is None:
        return client.get(case.path, headers=case.headers)
    return client.post(case.path, content=case.body, headers=JSON_TYPE | case.headers)


def assert_healthy(client: httpx.Client) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    response = client.post(PREDICT, content=GOOD)
    assert response.status_code == 200
    assert client.post(INFER, content=v2(features([5.1, 3.5, 1.4, 0.2]))).status_code == 200
    server_errors = re.findall(
        r'^rtserve_requests_total\{[^}]*code="5\d\d"[^}]*\} ([0-9.e+]+)$', client.get("/metrics").text, re.M
    )
    assert not [count for count in server_errors if float(count) > 0], "a 5xx was counted"


# -- the two ways to run the corpus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, multi_signature_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("repo")
    publish(LocalRepository(root), "iris", 1, demo_model_dir)
    publish(LocalRepository(root), "multi", 1, multi_signature_model_dir)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("server")
    env = {
        "RTSERVE_REPOSITORY": str(repository),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_MAX_BODY_BYTES": str(MAX_BODY),
        "RTSERVE_MAX_TENSOR_ELEMENTS": str(MAX_ELEMENTS),
        "RTSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "RTSERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    with running_server(env, folder) as process:
        yield process


@pytest.fixture(scope="module", params=["in-process", "server"])
def client(
    request: pytest.FixtureRequest, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    if request.param == "server":
        process: ServerProcess = request.getfixturevalue("server")
        with httpx.Client(base_url=process.url, timeout=CLIENT_TIMEOUT_S) as http:
            yield http
        return
    settings = Settings(
        repository=str(repository),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        max_body_bytes=MAX_BODY,
        max_tensor_elements=MAX_ELEMENTS,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    with running_app(settings) as test_client:
        yield test_client


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_request_gets_a_clear_answer(client: httpx.Client, name: str) -> None:
    check_answer(send(client, CORPUS[name]), CORPUS[name])


def test_body_over_the_limit_without_content_length(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ['
        # 300 KB in 3 KB chunks: the limit is crossed mid-stream. Chunks of a few bytes each would be a write
        # apiece, slow enough on a busy machine to meet the body timeout (408) before the limit.
        for _ in range(100):
            yield b"0.5, " * 600
        yield b"0.5]}]}"

    response = client.post(INFER, content=chunks())
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_healthy_after_the_corpus(client: httpx.Client) -> None:
    for case in CORPUS.values():
        assert send(client, case).status_code < 500
    assert_healthy(client)


# -- malformed HTTP, over raw sockets to the real server -------------------------------------------------------


PREDICT_B, CLOSE = PREDICT.encode(), b"Connection: close\r\n"
# (request, statuses accepted): uvicorn answers unparseable HTTP itself with a plain-text 400.
RAW_CORPUS: dict[str, tuple[bytes, set[int]]] = {
    "Content-Length not a number": (post(PREDICT_B, CLOSE + b"Content-Length: abc\r\n", GOOD, False), {400}),
    "Content-Length negative": (post(PREDICT_B, CLOSE + b"Content-Length: -5\r\n", GOOD, False), {400}),
    "Content-Length twice, disagreeing": (
        post(PREDICT_B, CLOSE + b"Content-Length: 10\r\nContent-Length: 20\r\n", GOOD, False),
        {400},
    ),
    "Content-Length of 30 digits": (
        post(PREDICT_B, CLOSE + b"Content-Length: " + b"9" * 30 + b"\r\n", GOOD, False),
        {400, 413},
    ),
    "Content-Length a superscript digit": (post(PREDICT_B, CLOSE + b"Content-Length: \xb2\r\n", GOOD, False), {400}),
    "Content-Length shorter than the body": (post(PREDICT_B, CLOSE + b"Content-Length: 5\r\n", GOOD, False), {400}),
    "Content-Length with chunked": (
        post(PREDICT_B, CLOSE + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", chunked(GOOD), False),
        {400},
    ),
    "chunk size not hex": (post(PREDICT_B, CLOSE + b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + GOOD, False), {400}),
    "chunk size of 20 digits": (
        post(PREDICT_B, CLOSE + b"Transfer-Encoding: chunked\r\n", b"f" * 20 + b"\r\n" + GOOD, False),
        {400},
    ),
    "gzip transfer coding": (
        post(PREDICT_B, CLOSE + b"Transfer-Encoding: gzip, chunked\r\n", chunked(gzip.compress(GOOD)), False),
        {400},
    ),
    "NUL in a header": (post(PREDICT_B, CLOSE + b"X-Trace: a\x00b\r\n", GOOD), {400}),
    "raw NUL in the path": (post(b"/v1/models/ir\x00is:predict", CLOSE, GOOD), {400}),
    "raw non-ASCII path": (post(b"/v1/models/\xff\xfe:predict", CLOSE, GOOD), {400}),
    "bare LF line ends": (post(PREDICT_B, CLOSE, GOOD).replace(b"\r\n", b"\n"), {400}),
    "unknown HTTP version": (post(PREDICT_B, CLOSE, GOOD).replace(b"HTTP/1.1", b"HTTP/9.9", 1), {400, 505}),
    "TLS hello on the plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, {400}),
    "header length a superscript digit": (
        post(INFER.encode(), CLOSE + b"Inference-Header-Content-Length: \xb2\r\n", b'{"inputs": []}'),
        {400},
    ),
    "200 KB header": (post(PREDICT_B, CLOSE + b"X-Padding: " + b"a" * 200_000 + b"\r\n", GOOD), {200, 400, 431}),
}


@pytest.mark.parametrize("name", list(RAW_CORPUS))
def test_malformed_http_is_refused(server: ServerProcess, name: str) -> None:
    request, statuses = RAW_CORPUS[name]
    answer = exchange(server.port, request)
    assert answer.status in statuses, (answer.status, answer.body[:200])
    assert answer.closed, "the server kept a connection the client asked to close"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(post(PREDICT_B, b"Content-Length: 1000\r\n", GOOD[:10], False), id="body shorter than declared"),
        pytest.param(post(PREDICT_B, b"Content-Length: 1000\r\n", b"", False), id="headers only"),
        pytest.param(
            post(PREDICT_B, b"Transfer-Encoding: chunked\r\n", b"ffff\r\n" + GOOD, False), id="chunk longer than sent"
        ),
    ],
)
def test_a_stalled_body_times_out_with_408_and_a_closed_connection(server: ServerProcess, request_bytes: bytes) -> None:
    answer = exchange(server.port, request_bytes, limit_s=BODY_TIMEOUT_S + 10)
    assert answer.status == 408
    assert "did not arrive" in json.loads(answer.body)["error"]
    assert answer.closed
    assert BODY_TIMEOUT_S - 0.5 < answer.seconds < BODY_TIMEOUT_S + 5


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"", id="a connection that sends nothing"),
        pytest.param(b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: rtserve\r\n", id="headers never finished"),
        pytest.param(post(PREDICT_B, b"", GOOD) + b"GET /v2/health/ready HTTP/1.1\r\n", id="second request unfinished"),
    ],
)
def test_unfinished_headers_are_cut_off(server: ServerProcess, request_bytes: bytes) -> None:
    """uvicorn alone would hold these connections open for as long as the client likes (RTSERVE_HEADER_TIMEOUT_S)."""
    answer = exchange(server.port, request_bytes, limit_s=HEADER_TIMEOUT_S + 10)
    assert answer.closed
    assert HEADER_TIMEOUT_S - 0.5 < answer.seconds < HEADER_TIMEOUT_S + 5
    assert answer.status == (200 if request_bytes.startswith(b"POST") and GOOD in request_bytes else 0)


def test_headers_sent_slowly_but_in_time_are_served(server: ServerProcess) -> None:
    request = post(PREDICT_B, CLOSE, GOOD)
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT_S) as sock:
        for start in range(0, len(request), 16):  # about a second in all, well inside the deadline
            sock.sendall(request[start : start + 16])
            time.sleep(HEADER_TIMEOUT_S / 2 / (len(request) / 16))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_server_healthy_after_malformed_http(server: ServerProcess) -> None:
    for request, _ in RAW_CORPUS.values():
        exchange(server.port, request)
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        assert_healthy(http)
