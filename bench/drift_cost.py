"""What drift monitoring costs the inference thread: DriftMonitor.observe per batch, against the model call.

observe() runs on a version's inference thread after the batch has been answered, so it adds no latency to that
batch's requests; it takes time the thread could spend on the next batch. This script times both on the demo
model (iris: one [-1, 4] float32 input) for the batch shapes the batcher makes, and, for scale, observe() on a
64-feature input with the same rows.

    .venv/bin/python -m bench.drift_cost            # a Markdown table for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.observability.drift import DriftMonitor
from service.observability.profile import build_profile
from service.settings import DriftSettings
from service.tensors import DTYPES, SignatureSpec, TensorSpec

FLOAT = next(d for d in DTYPES if d.tf_name == "DT_FLOAT")
# (requests in the batch, rows per request): what one model call of the batcher looks like.
BATCHES = ((1, 1), (8, 1), (32, 1), (4, 8))


def median_us(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def monitor_for(features: int) -> DriftMonitor:
    spec = SignatureSpec("serving_default", "p", {"x": TensorSpec("x", FLOAT, (-1, features))}, {})
    training = np.random.default_rng(0).normal(size=(5000, features)).astype(np.float32)
    return DriftMonitor(build_profile(spec, {"x": training}), DriftSettings(max_features=features))


def requests_of(requests: int, rows: int, features: int, name: str) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{name: rng.normal(size=(rows, features)).astype(np.float32)} for _ in range(requests)]


def model_call_us(repeats: int) -> dict[tuple[int, int], float]:
    """The demo model's call time per batch shape (TensorFlow imported only here)."""
    from service.runtime.tensorflow import TensorFlowLoader
    from service.tools.demo import write_demo_model

    with tempfile.TemporaryDirectory() as folder:
        servable = TensorFlowLoader()(write_demo_model(Path(folder) / "iris"))
        timings = {}
        for requests, rows in BATCHES:
            batch = {"features": np.concatenate([r["features"] for r in requests_of(requests, rows, 4, "features")])}
            servable.run("serving_default", batch)  # warm
            timings[(requests, rows)] = median_us(functools.partial(servable.run, "serving_default", batch), repeats)
        return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    iris, wide = monitor_for(4), monitor_for(64)
    model = model_call_us(args.repeats // 4)
    print("| batch (requests x rows) | model call (iris) | observe, 4 features | share | observe, 64 features |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for requests, rows in BATCHES:
        narrow_batch = requests_of(requests, rows, 4, "x")
        wide_batch = requests_of(requests, rows, 64, "x")
        narrow = median_us(functools.partial(iris.observe, narrow_batch), args.repeats)
        broad = median_us(functools.partial(wide.observe, wide_batch), args.repeats)
        call = model[(requests, rows)]
        print(
            f"| {requests} x {rows} | {call:.0f} µs | {narrow:.1f} µs | {100 * narrow / call:.1f}% | {broad:.1f} µs |"
        )


if __name__ == "__main__":
    main()
