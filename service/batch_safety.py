"""Which signatures may merge the rows of different requests into one model call.

Merging is only correct when a signature answers each row the same whatever else shares its call. A model whose
output for a row depends on the other rows (a softmax or a ranking over the batch axis, a normalisation by the
batch's statistics, a reduction) would answer wrongly, and would leak other clients' inputs into each answer.
TensorFlow cannot tell which kind a graph is, so by default (``merge: auto``) each signature is tried once at
load: random inputs of its dtypes and shapes, run row by row and as batches of several sizes, must agree within a
float tolerance. A signature that disagrees, or whose check cannot run, runs one request per model call. The
operator can force the choice per model and per signature (``on``/``off``, settings.BatchingSettings).

The check talks to the servable's ``run`` only, so it works for any runtime; it runs on the loading thread after
warm-up, before the version's inference thread starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.codecs.arrays import quote
from service.errors import ServingError
from service.settings import BatchingSettings
from service.tensors import SignatureSpec, TensorSpec

log = logging.getLogger(__name__)

# Batch sizes the check runs (capped by max_batch_size); the rows are run alone once and reused by every size.
CHECK_ROWS = (2, 5, 8)
# Relative tolerance by float width: batched kernels may sum in another order than a single row's.
_RTOL = {2: 1e-2, 4: 1e-4, 8: 1e-9}
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789 ", dtype=np.uint8)

Run = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

# The bases of a verdict, the `basis` label of rtserve_batching_merged.
SAFE, UNSAFE, CHECK_FAILED, FORCED_ON, FORCED_OFF, DISABLED, NO_BATCH_DIMENSION = (
    "safe",
    "unsafe",
    "check_failed",
    "forced_on",
    "forced_off",
    "disabled",
    "no_batch_dimension",
)


@dataclass(frozen=True)
class Verdict:
    """Whether a signature's requests share model calls, on what basis, and a one-line reason for status."""

    merge: bool
    basis: str
    detail: str

    def describe(self) -> str:
        return f"{'batched' if self.merge else 'alone'} ({self.basis}): {self.detail}"


def mergeable_signature(signature: SignatureSpec) -> bool:
    """True when every input and output has the batch dimension first, so rows can be stacked and split."""
    if not signature.inputs or not all(spec.is_batched for spec in signature.inputs.values()):
        return False
    # Unknown-rank outputs are checked on every call instead; a fixed first dimension never splits.
    return all(spec.shape is None or spec.is_batched for spec in signature.outputs.values())


def decide(
    run: Run, signatures: Mapping[str, SignatureSpec], settings: BatchingSettings, seed: int = 0
) -> dict[str, Verdict]:
    """The verdict of every signature under the (per-model) settings; auto runs the check."""
    verdicts = {}
    for name, spec in signatures.items():
        verdicts[name] = _decide_one(run, spec, settings, seed)
    return verdicts


def _decide_one(run: Run, spec: SignatureSpec, settings: BatchingSettings, seed: int) -> Verdict:
    choice = settings.merge_choice(spec.name)
    if not settings.enabled or settings.max_batch_size < 2:
        return Verdict(False, DISABLED, "batching is off for this model (enabled false or max_batch_size 1)")
    if not mergeable_signature(spec):
        return Verdict(False, NO_BATCH_DIMENSION, "an input or output has no unknown first (batch) dimension")
    if choice == "off":
        return Verdict(False, FORCED_OFF, "merge is set to off")
    if choice == "on":
        return Verdict(True, FORCED_ON, "merge is set to on (not checked)")
    sizes = sorted({min(rows, settings.max_batch_size) for rows in CHECK_ROWS})
    return check_rows(run, spec, sizes, np.random.default_rng(seed))


def check_rows(run: Run, spec: SignatureSpec, sizes: Sequence[int], rng: np.random.Generator) -> Verdict:
    """Run random rows alone and as batches of ``sizes`` rows; safe when every batched row matches its lone run.

    Random strings and integers may be what a model refuses (serialized tf.Examples, vocabulary indices): a check
    that fails with them is tried once more with neutral ones (empty strings, zeros, false), floats still random.
    """
    failure = ""
    for neutral in (False, True):
        inputs = {name: _random_input(tensor, max(sizes), rng, neutral) for name, tensor in spec.inputs.items()}
        try:
            alone = [run(spec.name, _rows(inputs, row, row + 1)) for row in range(max(sizes))]
            for size in sizes:
                difference = _first_difference(run(spec.name, _rows(inputs, 0, size)), alone[:size])
                if difference:
                    return Verdict(False, UNSAFE, difference)
        except Exception as error:  # whatever the model raises, the answer is the same: do not merge
            failure = error.message if isinstance(error, ServingError) else f"{type(error).__name__}: {error}"
            continue
        rows = ", ".join(str(size) for size in sizes)
        return Verdict(True, SAFE, f"each row was answered the same in calls of {rows} rows as alone")
    return Verdict(False, CHECK_FAILED, f"the check could not run the signature on random inputs ({failure[:200]})")


def _rows(inputs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: array[start:stop] for name, array in inputs.items()}


def _random_input(tensor: TensorSpec, rows: int, rng: np.random.Generator, neutral: bool) -> np.ndarray:
    shape = tensor.example_shape(rows)
    dtype = tensor.dtype
    if dtype.is_floating:
        return rng.standard_normal(shape).astype(dtype.numpy)
    if dtype.is_string:
        if neutral:
            return np.full(shape, b"", dtype=object)
        lengths = rng.integers(1, 9, size=shape)
        words = [_LETTERS[rng.integers(0, len(_LETTERS), size=n)].tobytes() for n in lengths.ravel()]
        return np.array(words, dtype=object).reshape(shape)
    if neutral:
        return np.zeros(shape, dtype.numpy)
    if dtype.is_bool:
        return rng.random(shape) < 0.5
    return rng.integers(0, 8, size=shape).astype(dtype.numpy)


def _first_difference(batched: Mapping[str, np.ndarray], alone: Sequence[Mapping[str, np.ndarray]]) -> str:
    """Why the batched call's rows differ from the lone calls, or "" when they agree."""
    size = len(alone)
    for name, array in batched.items():
        if array.ndim == 0 or array.shape[0] != size:
            return f"output {quote(name)} does not have one row per input row in a call of {size} rows"
        for row, single in enumerate(alone):
            want = np.asarray(single.get(name))
            got = array[row : row + 1]
            if want.shape != got.shape:
                return (
                    f"output {quote(name)} of a row has shape {list(want.shape)} alone but {list(got.shape)} "
                    f"in a call of {size} rows"
                )
            if not _same(got, want):
                return f"output {quote(name)} of row {row} differs in a call of {size} rows from the row alone"
    return ""


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if got.dtype.kind == "f" and want.dtype.kind == "f":
        rtol = _RTOL.get(got.dtype.itemsize, 1e-4)
        finite = np.abs(want[np.isfinite(want)])
        scale = float(finite.max()) if finite.size else 1.0
        return bool(np.allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-6), equal_nan=True))
    return bool(np.array_equal(got, want))


def log_verdicts(where: str, verdicts: Mapping[str, Verdict]) -> None:
    for name, verdict in verdicts.items():
        level = logging.WARNING if verdict.basis in (UNSAFE, CHECK_FAILED) else logging.INFO
        log.log(level, "%s: signature %s runs %s", where, quote(name), verdict.describe())


def batching_parameters(verdicts: Mapping[str, Verdict]) -> dict[str, str]:
    """The verdicts as V2 model metadata ``parameters`` (flat string values, as the protocol's parameters are)."""
    return {f"rtserve.batching.{name}": verdict.describe() for name, verdict in sorted(verdicts.items())}
