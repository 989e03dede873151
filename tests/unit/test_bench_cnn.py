"""The bench's compute-bound case (issue 13, point 3): the CNN's images and weights, the request bodies of its lanes,
the answer check, the lane selection and the report's compute-bound targets.

The targets are computed from small fake results dicts (made up here, not measured): what is tested is the
arithmetic and the wording, not a speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from bench import cnnbench, cnnmodel, grpc_payloads, payloads, report, run, servers


def test_the_images_and_weights_are_the_same_every_time() -> None:
    first, again = cnnmodel.images(8), cnnmodel.images(1)
    assert first.shape == (8, 64, 64, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first[:1], again)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    for one, other in zip(cnnmodel.weights(), cnnmodel.weights(), strict=True):
        np.testing.assert_array_equal(one, other)
    assert cnnmodel.weights()[-4].shape == (4 * 4 * 64, cnnmodel.DENSE)  # 64 -> /4 -> /2 -> pooled /2 = 4x4x64


def test_the_v2_binary_body_carries_the_image_as_raw_little_endian_float32() -> None:
    payload = cnnbench.build("v2-binary", 1)
    length = int(payload.headers[payloads.HEADER_LENGTH])
    assert payload.headers["Content-Type"] == "application/octet-stream"
    header = json.loads(payload.body[:length])
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("images", "FP32", [1, 64, 64, 3])
    assert tensor["parameters"]["binary_data_size"] == len(payload.body) - length == 64 * 64 * 3 * 4
    assert header["outputs"] == [{"name": "probabilities", "parameters": {"binary_data": True}}]
    image = np.frombuffer(payload.body[length:], dtype="<f4").reshape(1, 64, 64, 3)
    np.testing.assert_array_equal(image, cnnmodel.images(1))


def test_the_v2_json_body_carries_the_same_image_exactly() -> None:
    (tensor,) = json.loads(cnnbench.build("v2-json", 1).body)["inputs"]
    assert (tensor["name"], tensor["shape"]) == ("images", [1, 64, 64, 3])
    np.testing.assert_array_equal(
        np.asarray(tensor["data"], dtype=np.float32).reshape(1, 64, 64, 3), cnnmodel.images(1)
    )


def test_the_grpc_body_is_one_framed_model_infer_with_raw_contents() -> None:
    payload = cnnbench.build("v2-grpc", 1)
    assert payload.headers == grpc_payloads.HEADERS
    request = service_pb2.ModelInferRequest.FromString(grpc_payloads.unframe(payload.body))
    assert request.model_name == "cnn"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("images", "FP32", [1, 64, 64, 3])
    assert not tensor.HasField("contents")
    assert [output.name for output in request.outputs] == ["probabilities"]
    image = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(1, 64, 64, 3)
    np.testing.assert_array_equal(image, cnnmodel.images(1))


def test_every_lane_has_its_body_and_an_unknown_protocol_has_none() -> None:
    bodies = cnnbench.bodies()
    for lanes in cnnbench.LANES.values():
        for lane in lanes:
            assert (lane.protocol, 1) in bodies
    with pytest.raises(ValueError, match="tfserving"):
        cnnbench.build("tfserving", 1)


def test_the_answer_check_takes_float32_noise_and_rejects_a_wrong_answer() -> None:
    reference = np.full((1, 10), 0.1, dtype=np.float32)
    references = {"1": reference.tolist()}
    assert run._wrong(reference + np.float32(5e-5), references, 1, run.CNN.tolerance) == ""
    wrong = reference.copy()
    wrong[0, 3] += 1e-3
    assert run._wrong(wrong, references, 1, run.CNN.tolerance).startswith("1 rows: got")
    assert run._wrong(reference[:, :3], references, 1, run.CNN.tolerance)  # another shape is wrong too


def test_a_cnn_answer_decodes_from_binary_v2_and_raw_grpc() -> None:
    probabilities = np.linspace(0.0, 0.18, 10, dtype=np.float32).reshape(1, 10)
    head = json.dumps(
        {
            "outputs": [
                {"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "parameters": {"binary_data_size": 40}}
            ]
        }
    ).encode()
    body = head + probabilities.astype("<f4").tobytes()
    got = payloads.decode("v2-binary", body, {payloads.HEADER_LENGTH.lower(): str(len(head))})
    np.testing.assert_array_equal(got, probabilities)
    answer = service_pb2.ModelInferResponse(model_name="cnn")
    answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, 10])
    answer.raw_output_contents.append(probabilities.tobytes())
    np.testing.assert_array_equal(grpc_payloads.decode("v2-grpc", answer.SerializeToString()), probabilities)


def test_lanes_are_selected_by_name_by_cnn_or_all_by_default() -> None:
    def names(servers_arg: str | None, wanted: set[str] | None) -> dict[str, list[str]]:
        chosen = cnnbench.selected(servers_arg, wanted)
        return {spec.name: [lane.name for lane in lanes] for spec, lanes in chosen}

    everything = names(None, None)
    assert everything["rtserve"] == ["cnn-v2-binary", "cnn-v2-grpc"]
    assert everything["mlserver-batching"] == ["cnn-v2-json", "cnn-v2-grpc"]
    assert "seed" not in everything and "floor-asgi" not in everything
    assert names("rtserve,kserve", {"cnn-v2-grpc"}) == {"rtserve": ["cnn-v2-grpc"], "kserve": ["cnn-v2-grpc"]}
    assert names("rtserve", {"cnn"}) == {"rtserve": ["cnn-v2-binary", "cnn-v2-grpc"]}
    assert names(None, {"tfserving", "grpc"}) == {}  # the Iris lanes' names and kinds leave the CNN out


def test_mlserver_batching_is_sized_for_the_cnn_only_in_the_cnn_case(tmp_path: Path) -> None:
    def settings(name: str, model: str, batching: dict[str, float] | None) -> dict[str, Any]:
        spec = next(s for s in servers.SERVERS if s.name == name)
        workdir = tmp_path / f"{name}-{model}"
        servers._command(spec, 1, [2, 3], tmp_path / "models", workdir, (), model, batching)
        written: dict[str, Any] = json.loads((workdir / name / model / "model-settings.json").read_text())
        return written

    cnn = settings("mlserver-batching", "cnn", run.CNN.mlserver_batching)
    assert (cnn["name"], cnn["max_batch_size"], cnn["max_batch_time"]) == ("cnn", 64, 0.001)
    assert cnn["parameters"]["uri"].endswith("models/cnn/1")
    assert "max_batch_size" not in settings("mlserver", "cnn", run.CNN.mlserver_batching)  # no batching stays none
    iris = settings("mlserver-batching", "iris", None)
    assert (iris["max_batch_size"], iris["max_batch_time"]) == (32, 0.002)  # the Iris lanes' settings as they were


def _lane(server: str, lane: str, rps: float | None = None, status: str = "ok") -> dict[str, Any]:
    entry: dict[str, Any] = {"server": server, "title": server, "lane": lane, "status": status, "why": "refused"}
    if rps is not None:
        closed = {"connections": 32, "rps": rps, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0}}
        run_ = {**closed, "error_count": 0, "server_cpu_pct": 99.0, "client_cpu_pct": 20.0}
        entry["payloads"] = {"1": {"closed": [run_], "open": [], "max_rate": rps}}
    return entry


def _fake_results(lanes: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [{"rows": b, "calls_per_s": r / b, "rows_per_s": r} for b, r in ((1, 500.0), (64, 2000.0), (128, 1900.0))]
    inprocess = {"tensorflow_threads": 1, "rates": rates, "references": {}}
    cnn = {"model": "m", "concurrencies": [1, 32], "mlserver_batching": {"max_batch_size": 64}, "inprocess": inprocess}
    return {"lanes": [], "cnn": {**cnn, "lanes": lanes}}


def test_compute_bound_targets_compare_with_the_best_batch_and_mlserver_batching() -> None:
    lanes = [
        _lane("rtserve", "cnn-v2-binary", rps=1700.0),
        _lane("rtserve", "cnn-v2-grpc", rps=1500.0),
        _lane("mlserver-batching", "cnn-v2-json", rps=400.0),
        _lane("mlserver-batching", "cnn-v2-grpc", rps=1000.0),
    ]
    rows = report.compute_bound_targets(_fake_results(lanes))
    assert [(row["ratio"], row["ok"]) for row in rows] == [
        ("85%", True),
        ("4.2x", True),
        ("75%", False),
        ("1.5x", False),
    ]
    assert "vs 2,000 in-process (batch 64)" in rows[0]["measured"]  # the best batch, not the largest
    assert "(MLServer cnn-v2-json)" in rows[1]["measured"]
    assert "V2 gRPC raw" in rows[2]["target"] and "c=32" in rows[2]["target"]


def test_compute_bound_targets_say_what_was_not_measured_and_are_absent_without_the_case() -> None:
    lanes = [_lane("rtserve", "cnn-v2-binary", status="wrong answer"), _lane("rtserve", "cnn-v2-grpc", rps=900.0)]
    rows = report.compute_bound_targets(_fake_results(lanes))
    assert [row["ok"] for row in rows] == [None, None, False, None]
    assert rows[0]["measured"].startswith("not measured: rtserve cnn-v2-binary (wrong answer")
    assert "mlserver-batching cnn-v2-grpc (not in this run)" in rows[3]["measured"]
    assert report.compute_bound_targets({"lanes": []}) == []


def test_the_section_shows_the_in_process_rates_and_the_lanes() -> None:
    lanes = [_lane("rtserve", "cnn-v2-binary", rps=1700.0), _lane("kserve", "cnn-v2-binary", status="error")]
    text = "\n".join(report._compute_bound_section(_fake_results(lanes)))
    assert "| 64 | 31 | 2,000 |" in text
    assert "| rtserve | 1,700 |" in text  # a server with one REST lane is named alone
    assert "| kserve | error | refused |" in text
    assert report._compute_bound_section({"lanes": []}) == ["Not measured in this run."]
