"""PyTriton serving the bench's SavedModel: Triton's C++ front ends (HTTP and gRPC) and dynamic batcher in front
of a Python callable that runs the serving signature through TensorFlow.

Runs in ``bench/.venvs/pytriton`` (nvidia-pytriton 0.7.0, numpy<2, tensorflow-cpu; CPU-only here). The inputs and
outputs bound in Triton are read from the signature itself (names, dtypes, shapes past the batch dimension), so
any single-signature model the bench builds is served the same way. Triton's Python backend stub is a separate
process that needs the interpreter's own libpython: the bench starts this script with ``LD_LIBRARY_PATH`` set to
that directory (bench/servers.py).

usage: python pytriton_model.py --http-port P --grpc-port G --metrics-port M --model iris=DIR/iris/1
       [--model NAME=DIR ...] [--max-batch-size 256] [--max-queue-delay-us 1000] [--workspace DIR]

Each ``--model`` is bound as a Triton model of its own (its own Python backend stub and instance).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

SIGNATURE = "serving_default"


def _tensor(name: str, spec: tf.TensorSpec) -> Tensor:
    # Triton's shape leaves out the batch dimension when max_batch_size > 0; unknown sizes are -1.
    dims = tuple(-1 if size is None else int(size) for size in spec.shape.as_list()[1:])
    return Tensor(name=name, dtype=spec.dtype.as_numpy_dtype, shape=dims)


def describe(signature: Any) -> tuple[list[Tensor], list[Tensor]]:
    """Triton's input and output tensors for a concrete signature function, in name order."""
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    return (
        [_tensor(name, inputs[name]) for name in sorted(inputs)],
        [_tensor(name, outputs[name]) for name in sorted(outputs)],
    )


def infer_function(signature: Any) -> Callable[..., dict[str, np.ndarray]]:
    """Triton's callable: the batched inputs (numpy, by name) through the signature, numpy outputs by name."""

    @batch  # type: ignore[untyped-decorator]  # pytriton is untyped
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: np.asarray(tensor.numpy()) for name, tensor in outputs.items()}

    return infer  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a SavedModel to serve")
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cpus = len(os.sched_getaffinity(0))  # TensorFlow's pools sized as rtserve sizes them: the CPUs it may use
    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(cpus)
    models = [item.split("=", 1) for item in args.model]
    if any(len(pair) != 2 or not all(pair) for pair in models):
        parser.error(f"--model wants NAME=DIR, got {args.model}")
    signatures = {name: tf.saved_model.load(folder).signatures[SIGNATURE] for name, folder in models}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        for name, signature in signatures.items():
            inputs, outputs = describe(signature)
            triton.bind(
                model_name=name,
                infer_func=infer_function(signature),
                inputs=inputs,
                outputs=outputs,
                config=ModelConfig(
                    max_batch_size=args.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
                ),
                strict=True,
            )
        triton.serve()


if __name__ == "__main__":
    main()
