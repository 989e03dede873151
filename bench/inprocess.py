"""The model's in-process call rate: the SavedModel's serving signature called directly, one caller, no HTTP.

Run by ``bench.run`` in rtserve's virtualenv on the server's CPU, with TensorFlow's thread pools sized the way
rtserve sizes them (the CPUs this process may use), so it is the bound a server on that CPU can approach. Each
call is what a server has to do at least: numpy rows -> ``tf.constant`` -> signature -> ``.numpy()``.
Also prints the reference probabilities of the bench's payload rows, which every server's answers are checked
against.

usage: python -m bench.inprocess MODEL_DIR --batches 1,8,32,64 --seconds 3 [--case cnn]
prints one JSON object. ``--case cnn`` sends bench/cnnmodel.py's images instead of the Iris rows; the input and
output names are the signature's own.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from bench import cnnmodel
from bench.payloads import INPUT_NAME, OUTPUT_NAME, rows

CASES = {"iris": rows, "cnn": cnnmodel.images}  # what each bench case sends, by count

SIGNATURE = "serving_default"
MAX_CALLS = 2_000_000
WARMUP_CALLS = 200


def call_rate(
    signature: Any, batch: np.ndarray, seconds: float, names: tuple[str, str] = (INPUT_NAME, OUTPUT_NAME)
) -> dict[str, float]:
    input_name, output_name = names
    for _ in range(WARMUP_CALLS):
        signature(**{input_name: tf.constant(batch)})[output_name].numpy()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls < MAX_CALLS:
        signature(**{input_name: tf.constant(batch)})[output_name].numpy()
        calls += 1
        if calls % 50 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    rate = calls / elapsed
    return {"rows": len(batch), "calls": calls, "calls_per_s": rate, "rows_per_s": rate * len(batch)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reference-rows", default="1,64")
    parser.add_argument("--case", choices=sorted(CASES), default="iris")
    args = parser.parse_args()
    make = CASES[args.case]

    cpus = len(os.sched_getaffinity(0))  # as rtserve sizes its pools (no cgroup quota on the bench machine)
    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(cpus)
    signature = tf.saved_model.load(args.model_dir).signatures[SIGNATURE]
    # The signature's own names (the CNN's are not the Iris ones).
    names = (next(iter(signature.structured_input_signature[1])), next(iter(signature.structured_outputs)))

    references = {}
    for count in (int(value) for value in args.reference_rows.split(",")):
        output = signature(**{names[0]: tf.constant(make(count))})[names[1]].numpy()
        references[str(count)] = np.asarray(output).tolist()
    rates = [call_rate(signature, make(int(size)), args.seconds, names) for size in args.batches.split(",")]
    print(json.dumps({"tensorflow_threads": cpus, "rates": rates, "references": references}))


if __name__ == "__main__":
    main()
