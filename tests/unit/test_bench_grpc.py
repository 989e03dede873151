"""The bench's gRPC lanes: the framing h2load replays, the request messages, answer decoding, lane definitions,
and the report's gRPC targets when rtserve's gRPC lanes are not measured (issue 11, point 7)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tritonclient.grpc import service_pb2

from bench import grpc_payloads, h2load, report, run, servers
from bench.payloads import rows


@pytest.mark.parametrize("count", [1, 64])
def test_the_tf_serving_request_frames_and_parses_back(count: int) -> None:
    payload = grpc_payloads.build("tfserving-grpc", count, "iris")
    assert payload.headers == {"content-type": "application/grpc", "te": "trailers"}
    assert payload.body[0] == 0  # not compressed
    assert int.from_bytes(payload.body[1:5], "big") == len(payload.body) - 5
    request = predict_pb2.PredictRequest.FromString(grpc_payloads.unframe(payload.body))
    assert request.model_spec.name == "iris"
    assert request.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["features"]), rows(count))


@pytest.mark.parametrize("count", [1, 64])
def test_the_v2_request_frames_and_parses_back_with_raw_contents(count: int) -> None:
    request = service_pb2.ModelInferRequest.FromString(
        grpc_payloads.unframe(grpc_payloads.build("v2-grpc", count, "iris").body)
    )
    assert request.model_name == "iris"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("features", "FP32", [count, 4])
    assert not tensor.HasField("contents")
    assert [output.name for output in request.outputs] == ["probabilities"]
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], "<f4").reshape(count, 4), rows(count))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x00\x00\x00", "5-byte prefix"),
        (b"\x01\x00\x00\x00\x00", "compressed"),
        (b"\x00\x00\x00\x00\x03ab", "says 3"),
    ],
)
def test_unframe_refuses_what_is_not_one_plain_message(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        grpc_payloads.unframe(body)


def test_answers_decode_raw_typed_and_tensor_proto() -> None:
    probabilities = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], dtype=np.float32)
    raw = service_pb2.ModelInferResponse(model_name="iris")
    raw.outputs.add(name="probabilities", datatype="FP32", shape=[2, 3])
    raw.raw_output_contents.append(probabilities.tobytes())
    typed = service_pb2.ModelInferResponse(model_name="iris")
    typed.outputs.add(name="probabilities", datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend(
        probabilities.ravel().tolist()
    )
    predicted = predict_pb2.PredictResponse()
    predicted.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
    for protocol, answer in (("v2-grpc", raw), ("v2-grpc", typed), ("tfserving-grpc", predicted)):
        np.testing.assert_array_equal(grpc_payloads.decode(protocol, answer.SerializeToString()), probabilities)
    with pytest.raises(ValueError, match="unreadable"):
        grpc_payloads.decode("v2-grpc", service_pb2.ModelInferResponse(model_name="iris").SerializeToString())


def test_the_lanes_name_the_methods_ports_and_counters() -> None:
    spec = {s.name: s for s in servers.SERVERS}
    grpc_lanes = {name: {lane.name: lane for lane in s.lanes if lane.kind == "grpc"} for name, s in spec.items()}
    assert grpc_lanes["rtserve"]["tfserving-grpc"].path == "/tensorflow.serving.PredictionService/Predict"
    assert grpc_lanes["rtserve"]["v2-grpc"].path == "/inference.GRPCInferenceService/ModelInfer"
    # rtserve counts them under these protocol labels (issue 11, point 4)
    assert grpc_lanes["rtserve"]["tfserving-grpc"].counter == "grpc-tfserving"
    assert grpc_lanes["rtserve"]["v2-grpc"].counter == "grpc-v2"
    for name in ("rtserve", "kserve", "mlserver"):
        assert "v2-grpc" in grpc_lanes[name]
        assert spec[name].extra_ports >= 1  # the first extra port is its gRPC port
        assert any(lane.kind == "rest" for lane in spec[name].lanes)  # readiness is probed over REST


@pytest.mark.parametrize(("c", "split"), [(1, (1, 1)), (8, (1, 8)), (32, (4, 8)), (128, (16, 8))])
def test_concurrency_is_connections_times_streams(c: int, split: tuple[int, int]) -> None:
    assert h2load.split(c) == split
    assert split[0] * split[1] == c


def _closed(rps: float, c: int = 32) -> dict[str, Any]:
    return {"connections": c, "rps": rps, "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 2.0}}


def _lane(server: str, lane: str, status: str = "ok", rps: float = 0.0) -> dict[str, Any]:
    entry: dict[str, Any] = {"server": server, "title": server, "lane": lane, "status": status, "why": "UNIMPLEMENTED"}
    if status == "ok":
        entry["payloads"] = {str(n): {"closed": [_closed(rps)], "open": [], "max_rate": rps} for n in (1, 64)}
    return entry


def test_grpc_targets_say_not_measured_without_rtserve_grpc_lanes_and_compare_when_they_exist() -> None:
    lanes = [
        _lane("rtserve", "v2-grpc", "not supported"),
        _lane("rtserve", "v2-binary", rps=100.0),
        _lane("kserve", "v2-grpc", rps=200.0),
        _lane("mlserver", "v2-grpc", rps=300.0),
    ]
    missing = report.grpc_targets({"lanes": lanes})
    assert [row["ok"] for row in missing] == [None, None, None]
    assert missing[0]["measured"].startswith("not measured: rtserve v2-grpc (not supported")
    assert "rtserve tfserving-grpc (not in this run)" in missing[1]["measured"]

    lanes[0] = _lane("rtserve", "v2-grpc", rps=1000.0)
    lanes.append(_lane("rtserve", "tfserving-grpc", rps=600.0))
    measured = report.grpc_targets({"lanes": lanes})
    assert [(row["ratio"], row["ok"]) for row in measured] == [("3.3x", True), ("2.0x", False), ("10.00x", True)]
    assert "(mlserver)" in measured[0]["measured"]  # the better peer


def test_rtserve_counts_are_read_by_protocol_and_code() -> None:
    exposition = "\n".join(
        [
            "# TYPE rtserve_requests_total counter",
            'rtserve_requests_total{model_name="iris",model_version="1",protocol="grpc-v2",code="200"} 640.0',
            'rtserve_requests_total{model_name="iris",model_version="2",protocol="grpc-v2",code="200"} 2.0',
            'rtserve_requests_total{model_name="",model_version="",protocol="grpc-v2",code="404"} 3.0',
            'rtserve_requests_total{model_name="iris",model_version="1",protocol="v2",code="200"} 99.0',
            'rtserve_requests_created{model_name="iris",model_version="1",protocol="grpc-v2",code="200"} 1.7e9',
        ]
    )
    assert run.requests_by_code(exposition, "grpc-v2") == {"200": 642.0, "404": 3.0}
    assert run.requests_by_code(exposition, "grpc-tfserving") == {}
