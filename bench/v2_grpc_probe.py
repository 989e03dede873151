"""A quick look at the Open Inference Protocol gRPC lane: ModelInfer of the demo model over raw contents on one
channel (closed loop, one call at a time, then ``--concurrency`` calls at once), and the codec's own cost
(decode + encode of one request, no model) — the numbers docs/reliability.md quotes. Not the comparative
benchmark (that is ``make bench``); every loop is bounded in time.

    .venv/bin/python -m bench.v2_grpc_probe --target 127.0.0.1:8081       # a server already running iris
    .venv/bin/python -m bench.v2_grpc_probe --codec-only
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import grpc
import numpy as np

from bench.payloads import INPUT_NAME, rows
from service.codecs import v2_messages, v2_proto
from service.codecs.arrays import Limits
from service.tensors import DTYPES, SignatureSpec, TensorSpec

FLOAT = next(d for d in DTYPES if d.v2_name == "FP32")
SIGNATURE = SignatureSpec(
    "serving_default",
    "tensorflow/serving/predict",
    {INPUT_NAME: TensorSpec(INPUT_NAME, FLOAT, (-1, 4))},
    {"probabilities": TensorSpec("probabilities", FLOAT, (-1, 3))},
)
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def request(count: int, raw: bool = True, model: str = "iris") -> Any:
    message = v2_messages.ModelInferRequest(model_name=model)
    tensor = message.inputs.add(name=INPUT_NAME, datatype="FP32", shape=[count, 4])
    if raw:
        message.raw_input_contents.append(rows(count).astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows(count).ravel().tolist())
    return message


def codec_us(count: int, raw: bool, seconds: float) -> float:
    """Median microseconds to parse, decode, encode and serialize one request of ``count`` rows (no model)."""
    wire = request(count, raw).SerializeToString()
    answer = {"probabilities": np.zeros((count, 3), np.float32)}
    samples: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        decoded = v2_proto.decode_request(v2_messages.ModelInferRequest.FromString(wire), SIGNATURE, Limits(10**7))
        encoded = v2_proto.encode_response("iris", "1", decoded.id, answer, {"probabilities": FLOAT}, decoded.raw)
        encoded.SerializeToString()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


async def lane(target: str, count: int, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second and median latency (ms) of ModelInfer at ``count`` rows on one channel."""
    wire = request(count).SerializeToString()
    async with grpc.aio.insecure_channel(target) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        await call(wire, timeout=30)  # warm the connection
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await call(wire, timeout=30)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, statistics.median(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", default="127.0.0.1:8081")
    parser.add_argument("--seconds", type=float, default=3.0, help="per lane, at most 30")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--codec-only", action="store_true")
    args = parser.parse_args()
    seconds = min(args.seconds, 30.0)
    print("| lane | rows | calls at once | requests/s | rows/s | median ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for raw in (True, False):
        for count in (1, 64):
            median_ms = codec_us(count, raw, min(seconds, 2.0)) / 1e3  # in ms like the other rows
            print(f"| codec decode+encode, {'raw' if raw else 'typed'} | {count} | - | - | - | {median_ms:.3f} |")
    if args.codec_only:
        return
    for count in (1, 64):
        for concurrency in (1, args.concurrency):
            rate, median_ms = asyncio.run(lane(args.target, count, concurrency, seconds))
            print(f"| ModelInfer raw | {count} | {concurrency} | {rate:.0f} | {rate * count:.0f} | {median_ms:.2f} |")


if __name__ == "__main__":
    main()
