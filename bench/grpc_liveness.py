"""Liveness while the largest allowed gRPC request of each kind is parsed, decoded, run and answered.

The gRPC sibling of ``bench/liveness.py`` (same server, models, probes and table): the real server with gRPC on,
each worst case below sent alone as serialized bytes, while one thread asks REST ``/v2/health/live`` every 20 ms
and another asks gRPC ``grpc.health.v1.Health/Check`` every 20 ms on its own channel. Per case: the status code,
the call's own time, the worst answer of each probe and the number of their answers during it.

``--small SECONDS`` measures the other end instead: one-row Predict (typed) and ModelInfer (typed, raw) calls,
one at a time on one channel for SECONDS each (at most 30), the path every small message takes.

usage: python -m bench.grpc_liveness [--env NAME=VALUE ...] [--only TEXT] [--small SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from bench import servers
from bench.liveness import (
    PROBE_PERIOD_S,
    SLACK,
    Limits,
    Watcher,
    _wait_ready,
    build_repository,
    limits_of,
    liveness_probe,
)

REQUEST_TIMEOUT_S = 600.0
PREDICT = "/tensorflow.serving.PredictionService/Predict"
INFER = "/inference.GRPCInferenceService/ModelInfer"
CLASSIFY = "/tensorflow.serving.PredictionService/Classify"
MULTI = "/tensorflow.serving.PredictionService/MultiInference"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# TensorProto's and InferTensorContents' field numbers of the typed values filled below.
FLOAT_VAL, INT64_VAL, FP32_CONTENTS, INT64_CONTENTS = 5, 10, 6, 3


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    body: bytes
    rows: int  # the first dimension of every answer tensor


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packed(field: int, data: bytes) -> bytes:
    """One length-delimited field: how packed repeated numbers travel (built with numpy, not value by value)."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(dtype: int, shape: list[int], extra: bytes = b"", **fields: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    proto = tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in shape]), **fields
    )
    proto.MergeFromString(extra)
    return proto


def _predict(model: str, tensors: dict[str, Any]) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, tensor in tensors.items():
        request.inputs[alias].CopyFrom(tensor)
    return bytes(request.SerializeToString())


def _infer(model: str, inputs: list[tuple[str, str, list[int], bytes, list[bytes]]], raw: list[bytes]) -> bytes:
    """A ModelInferRequest; each input (name, datatype, shape, packed typed contents, bytes contents)."""
    from service.codecs import v2_messages

    request = v2_messages.ModelInferRequest(model_name=model)
    for name, datatype, shape, packed, strings in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        tensor.contents.MergeFromString(packed)
        tensor.contents.bytes_contents.extend(strings)
    request.raw_input_contents.extend(raw)
    return bytes(request.SerializeToString())


def _classify(examples: int, multi: bool = False) -> bytes:
    """A ClassificationRequest for the ``classify`` signature of ``examples`` with that many tf.Examples, or
    (``multi``) a MultiInferenceRequest with a classify and a regress task on them."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2

    request: Any
    if multi:
        request = inference_pb2.MultiInferenceRequest()
        for signature, method in (
            ("classify", "tensorflow/serving/classify"),
            ("regress", "tensorflow/serving/regress"),
        ):
            task = request.tasks.add(method_name=method)
            task.model_spec.name, task.model_spec.signature_name = "examples", signature
    else:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = "examples", "classify"
    listed = request.input.example_list.examples
    one = listed.add()
    one.features.feature["x"].float_list.value.append(1.0)
    each = one.SerializeToString()
    for _ in range(examples - 1):
        listed.add().MergeFromString(each)
    return bytes(request.SerializeToString())


def worst_cases(limits: Limits) -> list[Case]:
    """The largest gRPC request of each kind the limits allow; their answers are as large as the model makes
    them (iris: 3 floats a row, typed or raw as asked; multi: every token upper-cased back)."""
    from tensorflow.core.framework import types_pb2

    floats = min(limits.elements, (limits.body - SLACK) // 4) // 4 * 4
    rows = floats // 4
    features = np.full(floats, 1.5, dtype="<f4").tobytes()
    strings = min(limits.strings, (limits.body - SLACK) // 24)
    token = max(1, (limits.body - SLACK - 14 * strings) // strings)
    tokens = [b"x" * token] * strings
    ids = np.ones(strings, dtype="<i8")
    ids_varints = b"\x01" * strings  # int64 1 as a varint, packed
    float_tensor = _tensor(types_pb2.DT_FLOAT, [rows, 4], _packed(FLOAT_VAL, features))
    examples = min(limits.strings, (limits.body - SLACK) // 24)
    return [
        Case(f"TF Serving Classify, {examples} tf.Examples", CLASSIFY, _classify(examples), examples),
        Case(
            f"TF Serving MultiInference, 2 tasks on {examples} tf.Examples", MULTI, _classify(examples, True), examples
        ),
        Case(f"TF Serving Predict float_val, {rows} x 4", PREDICT, _predict("iris", {"features": float_tensor}), rows),
        Case(
            f"TF Serving Predict tensor_content, {rows} x 4",
            PREDICT,
            _predict("iris", {"features": _tensor(types_pb2.DT_FLOAT, [rows, 4], tensor_content=features)}),
            rows,
        ),
        Case(
            f"TF Serving Predict string_val, {strings} x {token} bytes",
            PREDICT,
            _predict(
                "multi",
                {
                    "ids": _tensor(types_pb2.DT_INT64, [strings, 1], _packed(INT64_VAL, ids_varints)),
                    "tokens": _tensor(types_pb2.DT_STRING, [strings], string_val=tokens),
                },
            ),
            strings,
        ),
        Case(
            f"V2 ModelInfer fp32_contents, {rows} x 4",
            INFER,
            _infer("iris", [("features", "FP32", [rows, 4], _packed(FP32_CONTENTS, features), [])], []),
            rows,
        ),
        Case(
            f"V2 ModelInfer raw FP32, {rows} x 4",
            INFER,
            _infer("iris", [("features", "FP32", [rows, 4], b"", [])], [features]),
            rows,
        ),
        Case(
            f"V2 ModelInfer bytes_contents, {strings} x {token} bytes",
            INFER,
            _infer(
                "multi",
                [
                    ("ids", "INT64", [strings, 1], _packed(INT64_CONTENTS, ids_varints), []),
                    ("tokens", "BYTES", [strings], b"", tokens),
                ],
                [],
            ),
            strings,
        ),
        Case(
            f"V2 ModelInfer raw BYTES, {strings} x {token} bytes",
            INFER,
            _infer(
                "multi",
                [("ids", "INT64", [strings, 1], b"", []), ("tokens", "BYTES", [strings], b"", [])],
                [ids.tobytes(), b"".join(len(t).to_bytes(4, "little") + t for t in tokens)],
            ),
            strings,
        ),
    ]


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    room = 2 * limits.body + 2**20
    return [("grpc.max_send_message_length", room), ("grpc.max_receive_message_length", -1)]


def health_probe(port: int) -> Callable[[], float]:
    """One gRPC health Check on its own channel: its latency in seconds (inf on failure)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    check = channel.unary_unary(
        HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    def probe() -> float:
        started = time.perf_counter()
        try:
            check(health_pb2.HealthCheckRequest(), timeout=60)
        except grpc.RpcError:
            return float("inf")
        return time.perf_counter() - started

    return probe


def call(port: int, case: Case, limits: Limits, timeout_s: float) -> tuple[str, str, bytes]:
    """Send the case's bytes: (status code name, its message, the answer)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=channel_options(limits)) as channel:
        method: Any = channel.unary_unary(case.method)  # bytes both ways
        try:
            answer: bytes = method(case.body, timeout=timeout_s)
        except grpc.RpcError as error:
            return error.code().name, str(error.details())[:160], b""
        return "OK", "", answer


def measure(
    port: int, grpc_port: int, case: Case, limits: Limits, timeout_s: float = REQUEST_TIMEOUT_S
) -> dict[str, Any]:
    live = Watcher(liveness_probe(port), PROBE_PERIOD_S)
    health = Watcher(health_probe(grpc_port), PROBE_PERIOD_S)
    live.start()
    health.start()
    started = time.perf_counter()
    try:
        status, message, answer = call(grpc_port, case, limits, timeout_s)
    finally:
        seconds = time.perf_counter() - started
        for watcher in (live, health):
            watcher.stop_event.set()
            watcher.join()
    return {
        "case": case.name,
        "body_mib": len(case.body) / 2**20,
        "status": status,
        "error": message,
        "answer_mib": len(answer) / 2**20,
        "answer": answer,
        "request_s": seconds,
        "live_worst_s": max(live.values, default=float("nan")),
        "live_answers": sum(1 for v in live.values if v != float("inf")),
        "health_worst_s": max(health.values, default=float("nan")),
        "health_answers": sum(1 for v in health.values if v != float("inf")),
    }


HEADER = (
    "| gRPC request | message MiB | status | answer MiB | call s | worst /v2/health/live s | answers | "
    "worst health Check s | answers |\n|---|---|---|---|---|---|---|---|---|"
)


def answer_rows(case: Case, answer: bytes) -> set[int]:
    """The first dimension of each of the answer's tensors (a correct answer has the request's rows in each)."""
    if case.method == MULTI:
        from tensorflow_serving.apis import inference_pb2

        results = inference_pb2.MultiInferenceResponse.FromString(answer).results
        return {len(r.classification_result.classifications) or len(r.regression_result.regressions) for r in results}
    if case.method == CLASSIFY:
        from tensorflow_serving.apis import classification_pb2

        return {len(classification_pb2.ClassificationResponse.FromString(answer).result.classifications)}
    if case.method == PREDICT:
        from tensorflow_serving.apis import predict_pb2

        outputs = predict_pb2.PredictResponse.FromString(answer).outputs.values()
        return {tensor.tensor_shape.dim[0].size for tensor in outputs}
    from service.codecs import v2_messages

    return {tensor.shape[0] for tensor in v2_messages.ModelInferResponse.FromString(answer).outputs}


def row(r: dict[str, Any]) -> str:
    return (
        f"| {r['case']} | {r['body_mib']:.1f} | {r['status']} | {r['answer_mib']:.1f} | {r['request_s']:.2f} | "
        f"{r['live_worst_s']:.3f} | {r['live_answers']} | {r['health_worst_s']:.3f} | {r['health_answers']} |"
        + (f" {r['error']}" if r["error"] else "")
    )


def small_cases() -> list[Case]:
    """One row of the demo model's features: the messages that stay on the event loop."""
    from tensorflow.core.framework import types_pb2

    features = np.array([5.1, 3.5, 1.4, 0.2], dtype="<f4").tobytes()
    typed = _tensor(types_pb2.DT_FLOAT, [1, 4], _packed(FLOAT_VAL, features))
    v2_typed: list[tuple[str, str, list[int], bytes, list[bytes]]] = [
        ("features", "FP32", [1, 4], _packed(FP32_CONTENTS, features), [])
    ]
    v2_raw: list[tuple[str, str, list[int], bytes, list[bytes]]] = [("features", "FP32", [1, 4], b"", [])]
    return [
        Case("TF Serving Predict float_val, 1 x 4", PREDICT, _predict("iris", {"features": typed}), 1),
        Case("V2 ModelInfer fp32_contents, 1 x 4", INFER, _infer("iris", v2_typed, []), 1),
        Case("V2 ModelInfer raw FP32, 1 x 4", INFER, _infer("iris", v2_raw, [features]), 1),
    ]


def closed_loop(grpc_port: int, case: Case, seconds: float) -> dict[str, Any]:
    """Calls one at a time for ``seconds``: calls per second and the median latency."""
    latencies: list[float] = []
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        method: Any = channel.unary_unary(case.method)
        for _ in range(50):  # warm the channel and the model's batch sizes
            method(case.body, timeout=10)
        end = time.perf_counter() + min(seconds, 30.0)
        while (started := time.perf_counter()) < end:
            method(case.body, timeout=10)
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "case": case.name,
        "calls_s": len(latencies) / sum(latencies),
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
    }


def run(overrides: dict[str, str], only: str = "", small_s: float = 0.0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="rtserve-grpc-liveness-") as folder:
        root = Path(folder)
        build_repository(root / "models")
        env = servers.server_environment() | overrides
        env |= {"RTSERVE_REPOSITORY": str(root / "models"), "RTSERVE_CACHE_DIR": str(root / "cache")}
        env |= {"RTSERVE_LOG_REQUESTS": "false", "PYTHONPATH": str(servers.REPO_ROOT)}
        port, grpc_port = servers.free_port(), servers.free_port()
        env |= {"RTSERVE_HOST": "127.0.0.1", "RTSERVE_PORT": str(port), "RTSERVE_GRPC_PORT": str(grpc_port)}
        command = [sys.executable, "-m", "service", "serve"]
        with (root / "server.log").open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(port, process)
            if small_s:
                for case in small_cases():
                    result = closed_loop(grpc_port, case, small_s)
                    print(f"| {result['case']} | {result['calls_s']:.0f} calls/s | p50 {result['p50_ms']:.2f} ms |")
                return []
            limits = limits_of(overrides)
            results = []
            for case in worst_cases(limits):
                if only in case.name:
                    results.append(measure(port, grpc_port, case, limits))
                    print(row(results[-1]), flush=True)
            return results
        finally:
            os.killpg(process.pid, 15)
            process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", default=[], help="a server setting, e.g. RTSERVE_CODEC_WORKERS=2")
    parser.add_argument("--only", default="", help="run the cases whose name holds this text")
    parser.add_argument("--small", type=float, default=0.0, help="seconds per one-row lane instead (at most 30)")
    options = parser.parse_args()
    print(HEADER if not options.small else "| one-row call | calls/s, one at a time | median |", flush=True)
    run(dict(item.split("=", 1) for item in options.env), options.only, options.small)
    return 0


if __name__ == "__main__":
    sys.exit(main())
