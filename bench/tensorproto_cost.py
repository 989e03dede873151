"""What answering a TF Serving gRPC tensor costs: typed ``*_val`` fields (the default, what the official example
clients read) against ``tensor_content`` bytes (RTSERVE_GRPC__TENSOR_CONTENT), and the decode of each.

The demo model's output is ``probabilities`` float32 [rows, 3]; the 1 MB cases are a float32 tensor of 262144
values and an int64 one of 131072 (varints in the typed field). Times are the median of single calls, on this
machine, including the protobuf serialization a gRPC answer goes through.

    .venv/bin/python -m bench.tensorproto_cost          # a Markdown table
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np

from service.codecs.arrays import Limits
from service.codecs.tensorproto import from_array, to_array

CASES = (
    ("demo output, 1 row", (1, 3), np.float32),
    ("demo output, 64 rows", (64, 3), np.float32),
    ("1 MB float32", (512, 512), np.float32),
    ("1 MB int64", (256, 512), np.int64),
)


def median_us(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def _encode(array: np.ndarray, tensor_content: bool) -> bytes:
    return bytes(from_array(array, "y", tensor_content).SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    limits = Limits(10**7)
    rng = np.random.default_rng(0)
    print(
        "| tensor | typed encode+serialize (us) | tensor_content encode+serialize (us) | typed decode (us) |"
        " tensor_content decode (us) |"
    )
    print("|---|---|---|---|---|")
    for name, shape, dtype in CASES:
        array = (rng.random(shape) * 2**40).astype(dtype)
        repeats = args.repeats if array.size < 10_000 else max(args.repeats // 10, 5)
        typed = median_us(functools.partial(_encode, array, False), repeats)
        content = median_us(functools.partial(_encode, array, True), repeats)
        typed_in = median_us(functools.partial(to_array, from_array(array, "y"), "x", limits), repeats)
        content_in = median_us(functools.partial(to_array, from_array(array, "y", True), "x", limits), repeats)
        print(f"| {name} | {typed:.1f} | {content:.1f} | {typed_in:.1f} | {content_in:.1f} |")


if __name__ == "__main__":
    main()
