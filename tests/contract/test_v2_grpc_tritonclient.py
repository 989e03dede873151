"""Open Inference Protocol gRPC conformance with real clients against the real server process.

tritonclient.grpc (which always sends raw_input_contents and reads raw_output_contents), and requests built by hand
from tritonclient's own messages (service_pb2, independent of rtserve's descriptor) for the typed contents path and
the bad-input corpus.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from apptools import ServerProcess, publish, running_server, wait_until
from modelfactory import half_bool_module, to_half_module
from service.codecs import v2_messages
from service.repository.local import LocalRepository

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    multi_signature_model_dir: Path,
    corrupt_model_dir: Path,
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "multi", 2, multi_signature_model_dir)
    publish(repository, "halfbool", 1, half_bool_module(tmp_path_factory.mktemp("halfbool") / "1"))
    publish(repository, "tohalf", 1, to_half_module(tmp_path_factory.mktemp("tohalf") / "1"))
    publish(repository, "broken", 1, corrupt_model_dir)  # never loads: listed with its reason, never ready
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "RTSERVE_LOAD_RETRY_INITIAL_S": "0.5",
    }
    with running_server(env, tmp_path_factory.mktemp("log")) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.grpc_target)
    yield client
    client.close()


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # raw_input_contents: tritonclient's only way
    return tensor


def iris_input() -> triton.InferInput:
    return raw_input("features", IRIS_ROWS, "FP32")


def assert_iris_answers(client: triton.InferenceServerClient) -> None:
    probabilities = client.infer("iris", [iris_input()]).as_numpy("probabilities")
    assert probabilities is not None and list(probabilities.argmax(axis=1)) == [0, 2]


# -- state and metadata --


def test_liveness_readiness_and_model_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("iris", "7")  # as REST's /v2/models/iris/versions/7/ready
    assert not client.is_model_ready("nope")
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*Failed to convert version: 'x1'"):
        client.is_model_ready("iris", "x1")


def test_metadata_is_the_rest_document(server: ServerProcess, client: triton.InferenceServerClient) -> None:
    rest = httpx.get(server.url + "/v2").json()
    assert client.get_server_metadata(as_json=True) == rest
    for model in ("iris", "multi", "halfbool"):
        document = httpx.get(f"{server.url}/v2/models/{model}").json()
        answer = client.get_model_metadata(model, as_json=True)
        for key in ("name", "versions", "platform"):
            assert answer[key] == document[key]
        for side in ("inputs", "outputs"):
            assert [t | {"shape": [int(d) for d in t["shape"]]} for t in answer[side]] == document[side]
    # The spec's `properties` (tritonclient's proto lacks the field): the same batching verdicts as REST's.
    request = service_pb2.ModelMetadataRequest(name="iris", version="1")
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")(request.SerializeToString())
    ours = v2_messages.ModelMetadataResponse.FromString(raw)
    assert dict(ours.properties) == httpx.get(f"{server.url}/v2/models/iris").json()["parameters"]
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*model 'nope' is not served here"):
        client.get_model_metadata("nope")


def test_repository_index(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    def rows() -> dict[tuple[str, str], tuple[str, str]]:
        index = client.get_model_repository_index(as_json=True)["models"]
        return {(m["name"], m.get("version", "")): (m.get("state", ""), m.get("reason", "")) for m in index}

    wait_until(lambda: rows()[("broken", "1")][1], 60, what="the corrupt version to fail")
    listed = rows()
    assert sorted(listed) == [("broken", "1"), ("halfbool", "1"), ("iris", "1"), ("multi", "2"), ("tohalf", "1")]
    assert all(state == "READY" and not reason for key, (state, reason) in listed.items() if key[0] != "broken")
    state, reason = listed[("broken", "1")]
    assert state in ("UNAVAILABLE", "LOADING") and "model 'broken' version 1" in reason
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=30)
    assert sorted(m.name for m in ready.models) == ["halfbool", "iris", "multi", "tohalf"]


def test_a_model_that_is_not_ready(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    assert not client.is_model_ready("broken")
    with pytest.raises(InferenceServerException, match=r"UNAVAILABLE.*model 'broken' has no AVAILABLE version"):
        client.infer("broken", [raw_input("features", IRIS_ROWS, "FP32")])
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*model 'broken' version 1 is not AVAILABLE"):
        client.infer("broken", [raw_input("features", IRIS_ROWS, "FP32")], model_version="1")
    assert_iris_answers(client)


def test_unoffered_triton_rpcs_are_unimplemented(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
        client.get_model_config("iris")
    with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
        client.get_inference_statistics("iris")


# -- inference through tritonclient (raw both ways) --


def test_infer_fp32_raw_with_id_and_parameters(client: triton.InferenceServerClient) -> None:
    result = client.infer(
        "iris",
        [iris_input()],
        outputs=[triton.InferRequestedOutput("probabilities")],
        request_id="abc",
        parameters={"ratio": 0.5, "flag": True, "label": "x", "count": 3},  # double, bool, string, int64
        priority=2,  # uint64_param
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None and probabilities.shape == (2, 3)
    assert list(probabilities.argmax(axis=1)) == [0, 2]
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("iris", "1", "abc")
    assert len(response.raw_output_contents) == 1


def test_infer_int64_and_bytes_with_requested_outputs(client: triton.InferenceServerClient) -> None:
    ids = np.array([[1, 2, 3], [2**40, -5, 0]], dtype=np.int64)
    tokens = np.array([b"abc", "é".encode()], dtype=object)
    result = client.infer(
        "multi",
        [raw_input("ids", ids, "INT64"), raw_input("tokens", tokens, "BYTES")],
        outputs=[triton.InferRequestedOutput("upper"), triton.InferRequestedOutput("total")],
    )
    assert [o.name for o in result.get_response().outputs] == ["upper", "total"]
    assert result.as_numpy("total").tolist() == [6, 2**40 - 5]
    assert result.as_numpy("upper").tolist() == [b"ABC", "é".encode()]
    assert result.as_numpy("lengths") is None  # not requested


def test_infer_fp16_bool_int8(client: triton.InferenceServerClient) -> None:
    half = np.array([[0.5, -1.5], [1024.0, 3.0]], dtype=np.float16)
    flag = np.array([True, False])
    small = np.array([-128 + 1, 127], dtype=np.int8)
    result = client.infer(
        "halfbool",
        [raw_input("half", half, "FP16"), raw_input("flag", flag, "BOOL"), raw_input("small", small, "INT8")],
    )
    doubled = result.as_numpy("half_doubled")
    assert doubled is not None and doubled.dtype == np.float16 and doubled.tolist() == (half * 2).tolist()
    assert result.as_numpy("flag_not").tolist() == [False, True]
    assert result.as_numpy("small_negated").tolist() == [127, -127]


def test_stream_answers_in_order_and_survives_a_bad_request(client: triton.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for k in range(12):
            rows = np.full((k % 4 + 1, 4), float(k), dtype=np.float32)
            model = "nope" if k == 5 else "iris"
            client.async_stream_infer(model, [raw_input("features", rows, "FP32")], request_id=f"r{k}")
        got = [answers.get(timeout=30) for _ in range(12)]
    finally:
        client.stop_stream()
    for k, (result, error) in enumerate(got):
        if k == 5:
            assert result is None and "model 'nope' is not served here" in str(error)
            continue
        assert error is None, error
        assert result.get_response().id == f"r{k}"
        assert result.as_numpy("probabilities").shape == (k % 4 + 1, 3)


# -- typed contents, built by hand --


def test_typed_request_gets_a_typed_answer(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="1", id="t1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROWS.ravel().tolist())
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "t1" and not response.raw_output_contents
    values = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(2, 3)
    assert list(values.argmax(axis=1)) == [0, 2]


def test_typed_int64_and_bytes(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="multi")
    ids = request.inputs.add(name="ids", datatype="INT64", shape=[1, 2])
    ids.contents.int64_contents.extend([4, 5])
    tokens = request.inputs.add(name="tokens", datatype="BYTES", shape=[1])
    tokens.contents.bytes_contents.append(b"hi")
    response = stub.ModelInfer(request, timeout=30)
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["total"].contents.int64_contents) == [9]
    assert list(outputs["upper"].contents.bytes_contents) == [b"HI"]
    assert list(outputs["lengths"].contents.int_contents) == [2]


def test_fp16_output_answers_raw_even_to_a_typed_request(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """FP16 has no typed field, so an answer holding one is all raw (the protocol forbids mixing)."""
    request = service_pb2.ModelInferRequest(model_name="tohalf")
    request.inputs.add(name="small", datatype="INT8", shape=[3]).contents.int_contents.extend([-2, 0, 100])
    response = stub.ModelInfer(request, timeout=30)
    outputs = [o.name for o in response.outputs]
    raw = dict(zip(outputs, response.raw_output_contents, strict=True))
    assert np.frombuffer(raw["as_half"], "<f2").tolist() == [-2.0, 0.0, 100.0]
    assert np.frombuffer(raw["negated"], "<i1").tolist() == [2, 0, -100]
    assert not any(o.contents.ListFields() for o in response.outputs)


def test_typed_fp16_input_is_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="halfbool")
    request.inputs.add(name="half", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1.0, 2.0])
    request.inputs.add(name="flag", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    request.inputs.add(name="small", datatype="INT8", shape=[1]).contents.int_contents.append(1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'half' has datatype FP16, which has no typed contents field" in caught.value.details()


def test_timeout_parameter_is_a_deadline(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(IRIS_ROWS.tobytes())
    request.parameters["timeout"].uint64_param = 1  # microseconds, as tritonclient sends it: gone before queued
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline passed" in caught.value.details()
    request.parameters["timeout"].int64_param = -5
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter 'timeout' must be a positive number of microseconds" in caught.value.details()


# -- the bad-input corpus --


def iris_raw(**changes: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model", "iris"), model_version=changes.pop("v", ""))
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(IRIS_ROWS.tobytes())
    for change in changes.values():
        change(request, tensor)
    return request


def _set(field: str, value: Any) -> Callable[[Any, Any], None]:
    return lambda request, tensor: setattr(tensor, field, value)


def _shape(*dims: int) -> Callable[[Any, Any], None]:
    def change(request: Any, tensor: Any) -> None:
        del tensor.shape[:]
        tensor.shape.extend(dims)

    return change


def _bytes_request(raw: bytes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="multi")
    request.inputs.add(name="ids", datatype="INT64", shape=[1, 1])
    request.inputs.add(name="tokens", datatype="BYTES", shape=[1])
    request.raw_input_contents.extend([np.array([1], np.int64).tobytes(), raw])
    return request


BAD = {
    "wrong datatype": (
        iris_raw(c=_set("datatype", "FP64")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has datatype FP64, the model expects FP32",
    ),
    "unknown datatype": (
        iris_raw(c=_set("datatype", "BF16")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has unknown datatype 'BF16'",
    ),
    "shape that lies": (
        iris_raw(c=_shape(4, 4)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has shape [4, 4] (16 x 4 bytes) but 32 bytes",
    ),
    "shape the model refuses": (
        iris_raw(c=_shape(4, 2)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' expects shape [-1, 4], got [4, 2]",
    ),
    "raw size mismatch": (
        iris_raw(c=lambda r, t: r.raw_input_contents.__setitem__(0, b"\x00" * 31)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has shape [2, 4] (8 x 4 bytes) but 31 bytes",
    ),
    "raw count mismatch": (
        iris_raw(c=lambda r, t: r.raw_input_contents.append(b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 raw_input_contents entries for 1 inputs",
    ),
    "mixed raw and typed": (
        iris_raw(c=lambda r, t: t.contents.fp32_contents.append(1.0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has typed contents but the request uses raw_input_contents",
    ),
    "too many elements": (
        iris_raw(c=_shape(2**40, 4)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has 4398046511104 elements, more than the limit",
    ),
    "unknown model": (iris_raw(model="nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' is not served here"),
    "unknown version": (iris_raw(v="7"), grpc.StatusCode.NOT_FOUND, "model 'iris' version 7 is not AVAILABLE"),
    "malformed version": (
        iris_raw(v="one"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Failed to convert version: 'one' to numeric.",
    ),
    "unknown output": (
        iris_raw(c=lambda r, t: r.outputs.add(name="logits")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request names unknown output 'logits'",
    ),
    "unknown input": (
        iris_raw(c=_set("name", "petals")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request names unknown input 'petals'",
    ),
    "garbage BYTES length prefix": (
        _bytes_request(b"\xff\xff\xff\xffab"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'tokens' binary BYTES element of 4294967295 bytes runs past the data",
    ),
    "BYTES count beyond the shape": (
        _bytes_request(serialize_byte_tensor(np.array([b"a", b"b"], dtype=object)).item()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'tokens' binary BYTES data holds more than the 1 elements of its shape",
    ),
    "typed values in the wrong field": (
        iris_raw(
            c=lambda r, t: (r.ClearField("raw_input_contents"), t.contents.int_contents.extend(range(8)), None)[-1]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features' has datatype FP32 but values in int_contents",
    ),
}


@pytest.mark.parametrize("case", BAD.keys())
def test_bad_input_corpus(
    case: str, stub: service_pb2_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    request, code, message = BAD[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()
    assert_iris_answers(client)  # and the server keeps serving


def test_model_rpcs_are_counted_as_grpc_v2(server: ServerProcess, client: triton.InferenceServerClient) -> None:
    def count(**labels: str) -> float:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "rtserve_requests_total" and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    ok, bad = count(protocol="grpc-v2", model_name="iris", code="200"), count(protocol="grpc-v2", code="400")
    assert_iris_answers(client)
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        client.infer("iris", [raw_input("features", IRIS_ROWS[:, :3].copy(), "FP32")])
    assert count(protocol="grpc-v2", model_name="iris", code="200") == ok + 1
    assert count(protocol="grpc-v2", code="400") == bad + 1
