"""The model's in-process call rate: the runtime's own servable ``.run``, one caller, no HTTP.

Run by ``bench.run`` in rtserve's virtualenv on the server's CPU, with TensorFlow's thread pools sized the way
rtserve sizes them (the CPUs this process may use), so it is the bound a server on that CPU can approach. Each
call is what the server's inference thread does for a batch: ``TensorFlowServable.run`` on numpy rows, for each
signature runner asked for (``session``, rtserve's default, and ``function``), one loaded at a time.
Also prints the reference probabilities of the bench's payload rows (from the first runner), which every
server's answers are checked against.

usage: python -m bench.inprocess MODEL_DIR --batches 1,8,32,64 --seconds 3 [--runners session,function] [--case cnn]
prints one JSON object; ``rates`` lists the first runner's rates first (the bound the bench reports). ``--case cnn``
sends bench/cnnmodel.py's images instead of the Iris rows; the input and output names are the signature's own.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from bench import cnnmodel
from bench.payloads import rows

if TYPE_CHECKING:
    from service.runtime.runner import RunnerChoice

CASES: dict[str, Callable[[int], np.ndarray]] = {"iris": rows, "cnn": cnnmodel.images}  # what each case sends
SIGNATURE = "serving_default"
RUNNERS = ("session", "function")
MAX_CALLS = 2_000_000
WARMUP_CALLS = 200


def call_rate(servable: Any, batch: np.ndarray, seconds: float) -> dict[str, float]:
    spec = servable.signatures[SIGNATURE]
    inputs = {next(iter(spec.inputs)): batch}  # the signature's own input name (the CNN's is not the Iris one)
    for _ in range(WARMUP_CALLS):
        servable.run(SIGNATURE, inputs)
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls < MAX_CALLS:
        servable.run(SIGNATURE, inputs)
        calls += 1
        if calls % 50 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    rate = calls / elapsed
    return {"rows": len(batch), "calls": calls, "calls_per_s": rate, "rows_per_s": rate * len(batch)}


def runner_rates(
    model_dir: Path, runner: str, batches: list[int], seconds: float, make: Callable[[int], np.ndarray] = rows
) -> tuple[list[Any], Any]:
    """One runner's rates (each tagged with the runner) and the loaded servable, for the references."""
    from service.runtime.tensorflow import TensorFlowLoader

    servable = TensorFlowLoader(runner=cast("RunnerChoice", runner))(model_dir)
    if servable.runner != runner:
        raise SystemExit(f"{model_dir} loaded with the {servable.runner} runner, not {runner}")
    rates = [{"runner": runner, **call_rate(servable, make(size), seconds)} for size in batches]
    return rates, servable


def references_of(servable: Any, make: Callable[[int], np.ndarray], counts: list[int]) -> dict[str, Any]:
    """The signature's one output for each payload size: what every server's answers are checked against."""
    spec = servable.signatures[SIGNATURE]
    input_name, output_name = next(iter(spec.inputs)), next(iter(spec.outputs))
    return {
        str(count): np.asarray(servable.run(SIGNATURE, {input_name: make(count)})[output_name]).tolist()
        for count in counts
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reference-rows", default="1,64")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="signature runners to measure, in order")
    parser.add_argument("--case", choices=sorted(CASES), default="iris")
    args = parser.parse_args()
    make = CASES[args.case]

    from service.runtime.tensorflow import configure_threads

    cpus = len(os.sched_getaffinity(0))  # as rtserve sizes its pools (no cgroup quota on the bench machine)
    configure_threads(cpus, cpus)
    batches = [int(size) for size in args.batches.split(",")]
    runners = [name.strip() for name in args.runners.split(",") if name.strip()]
    if not runners or not set(runners) <= set(RUNNERS):
        parser.error(f"--runners takes names from {', '.join(RUNNERS)}")
    rates: list[Any] = []
    references: dict[str, Any] = {}
    for index, runner in enumerate(runners):
        measured, servable = runner_rates(Path(args.model_dir), runner, batches, args.seconds, make)
        rates += measured
        if index == 0:
            references = references_of(servable, make, [int(value) for value in args.reference_rows.split(",")])
        servable.close()  # one model in memory at a time, as in the server
    print(json.dumps({"tensorflow_threads": cpus, "runner": runners[0], "rates": rates, "references": references}))


if __name__ == "__main__":
    main()
