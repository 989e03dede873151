"""The TensorFlow runtime: load a SavedModel version and run its signatures on numpy inputs.

The graph is screened and its signatures described from ``saved_model.pb`` (saved_model.py) before TensorFlow
sees it; then a signature runner loads it (runner.py): by default the session runner (session.py), TF Serving's
way, and the function runner (functions.py, ``tf.saved_model.load``) for versions the session cannot serve.
Whichever runs, the servable maps errors, warms up and replays the warm-up file the same way.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import tensorflow as tf

from service.codecs.lookup import find_signature
from service.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ModelLoadError,
    ServingError,
    Unavailable,
)
from service.runtime.functions import FunctionRunner
from service.runtime.runner import CannotServe, RunnerChoice, RunnerName, SignatureRunner
from service.runtime.saved_model import (
    NO_SERVABLE_SIGNATURE,
    SavedModelError,
    describe_meta_graph,
    describe_saved_model,
    read_saved_model,
    serve_meta_graph,
    set_signature_methods,
)
from service.runtime.screening import ALLOW_SETTING, refusable_ops, refusal_message, screen
from service.runtime.session import SessionRunner
from service.runtime.tf_errors import cause, decoded, op_error, tf_error_line
from service.runtime.warmup_records import WARMUP_FILE, read_warmup_requests
from service.tensors import DEFAULT_SIGNATURE, SignatureSpec

# Re-exported: the runtime's public names stay importable from here.
__all__ = [
    "TensorFlowLoader",
    "TensorFlowServable",
    "configure_threads",
    "describe_saved_model",
    "set_signature_methods",
    "synthetic_inputs",
    "tf_error_line",
]

log = logging.getLogger(__name__)


def configure_threads(intra_op: int, inter_op: int) -> None:
    """Size TensorFlow's thread pools; call once per process before any model loads.

    TensorFlow fixes its pools when its runtime starts, so a later call with other values only logs a warning.
    """
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if current == (intra_op, inter_op):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
        log.info("TensorFlow thread pools: intra_op=%d inter_op=%d", intra_op, inter_op)
    except RuntimeError as error:
        log.warning(
            "TensorFlow is already initialized with intra_op=%d inter_op=%d threads; "
            "cannot change to intra_op=%d inter_op=%d (%s)",
            *current,
            intra_op,
            inter_op,
            error,
        )


class TensorFlowServable:
    """One loaded SavedModel version."""

    def __init__(self, folder: Path, runner: SignatureRunner) -> None:
        self._folder = folder
        self._runner: SignatureRunner | None = runner
        self._calls = dict(runner.calls)
        self._signatures = dict(runner.signatures)
        self._runner_name: RunnerName = runner.name
        self._closed = False

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    @property
    def runner(self) -> RunnerName:
        """Which runner calls the signatures: ``session`` or ``function``."""
        return self._runner_name

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        call = self._calls.get(signature)
        if call is None:
            raise self._no_runner(signature)
        try:
            return call(inputs)
        except tf.errors.OpError as error:
            raise op_error(signature, error) from None
        except UnicodeDecodeError as error:
            # TF fails to decode an op's error message when it quotes non-UTF-8 input bytes.
            raise InvalidArgument(tf_error_line(decoded(error))) from None
        except Exception as error:
            raise Internal(f"signature {signature!r} failed: {cause(error)}") from error

    def _no_runner(self, signature: str) -> ServingError:
        # Neither message names the folder: it is a cache path, and clients know the model and version instead.
        if not self._closed and signature not in self._signatures:
            try:
                find_signature(self._signatures, signature)  # the data plane's rule: INVALID_ARGUMENT, same words
            except InvalidArgument as error:
                return error
        return Unavailable("this model version has been unloaded; retry")

    def abortable(self) -> AbstractContextManager[None]:
        """TensorFlow work this thread runs inside is cancelled by ``abort`` (the load deadline)."""
        return nullcontext() if self._runner is None else self._runner.abortable()

    def abort(self) -> None:
        if self._runner is not None:
            self._runner.abort()

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        for spec in self._signatures.values():
            self._warm_up_signature(spec, batch_sizes)
            self._check_aborted()
        self._replay_warmup_requests()

    def _check_aborted(self) -> None:
        if self._runner is None or self._runner.cancelled:
            raise DeadlineExceeded(f"{self._folder}: warm-up cancelled at the load deadline")

    def _replay_warmup_requests(self) -> None:
        """TF Serving's assets.extra/tf_serving_warmup_requests, when the version has one: every record must run."""
        requests = read_warmup_requests(self._folder)
        for index, request in enumerate(requests):
            where = f"{WARMUP_FILE} record {index}"
            name = request.signature_name or DEFAULT_SIGNATURE
            spec = self._signatures.get(name)
            if spec is None:
                raise ModelLoadError(f"{where} names signature {name!r}, which the model does not have")
            inputs = request.inputs
            if request.examples is not None:  # classify/regress: the signature's one input takes the examples
                inputs = dict.fromkeys(spec.inputs, request.examples)
            if set(spec.inputs) != set(inputs):
                raise ModelLoadError(
                    f"{where} has inputs {sorted(inputs)}, signature {name!r} takes {sorted(spec.inputs)}"
                )
            try:
                self.run(name, inputs)
            except ServingError as error:
                self._check_aborted()
                raise ModelLoadError(f"{where} failed: {error.message}") from None
        if requests:
            log.info("%s: replayed %d warm-up requests from %s", self._folder, len(requests), WARMUP_FILE)

    def _warm_up_signature(self, spec: SignatureSpec, batch_sizes: Iterable[int]) -> None:
        for batch_size in batch_sizes:
            try:
                self.run(spec.name, synthetic_inputs(spec, batch_size))
            except ServingError as error:
                # Not fatal: e.g. classify signatures need real serialized tf.Examples.
                log.warning(
                    "%s: signature %r does not run on synthetic inputs (%s); it warms up on a real request",
                    self._folder,
                    spec.name,
                    error.message,
                )
                return

    def close(self) -> None:
        self._closed = True
        self._calls = {}
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        del runner  # no reference left for gc.collect to keep
        gc.collect()


class TensorFlowLoader:
    """Loads a version folder as a TensorFlowServable; any failure is a one-line ModelLoadError.

    The graph is screened against an allowlist of op families before TensorFlow sees it (runtime/screening.py);
    ``allowed_file_ops`` names the refused ops that this server lets through anyway. ``runner`` picks how
    signatures run: ``auto`` the session runner, or the function runner for a version the session cannot serve;
    ``session`` or ``function`` only that one.
    """

    def __init__(self, allowed_file_ops: Iterable[str] = (), runner: RunnerChoice = "auto") -> None:
        self._allowed = frozenset(allowed_file_ops)
        self._runner: RunnerChoice = runner
        unknown = sorted(self._allowed - refusable_ops())
        if unknown:
            log.warning("%s names ops that are never refused: %s", ALLOW_SETTING, ", ".join(unknown))

    def __call__(self, path: Path) -> TensorFlowServable:
        folder = Path(path)
        try:
            meta_graph = serve_meta_graph(read_saved_model(folder))
            findings = screen(meta_graph, self._allowed)
            if findings:
                raise SavedModelError(refusal_message(findings))
            signatures = describe_meta_graph(folder, meta_graph)
            if not signatures:
                raise SavedModelError(NO_SERVABLE_SIGNATURE)
            runner = self._load(folder, signatures)
        except Exception as error:
            raise ModelLoadError(f"cannot load SavedModel from {folder}: {cause(error)}") from error
        log.info("%s: %d signatures run by the %s runner", folder, len(runner.signatures), runner.name)
        return TensorFlowServable(folder, runner)

    def _load(self, folder: Path, signatures: Mapping[str, SignatureSpec]) -> SignatureRunner:
        if self._runner != "function":
            try:
                return SessionRunner(folder, signatures)
            except CannotServe as why:
                if self._runner == "session":
                    raise SavedModelError(f"the session runner cannot serve it: {why}") from why
                log.warning("%s: the session runner cannot serve it (%s); using the function runner", folder, why)
        return FunctionRunner(folder, signatures)


# -- synthetic inputs ----------------------------------------------------------------------------------------


def synthetic_inputs(signature: SignatureSpec, batch_size: int) -> dict[str, np.ndarray]:
    """Zeros (empty strings for DT_STRING) for every input; the batch dimension is ``batch_size``, other
    unknown dimensions are 1."""
    arrays: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        shape = spec.example_shape(batch_size)
        if spec.dtype.is_string:
            arrays[name] = np.full(shape, b"", dtype=object)
        else:
            arrays[name] = np.zeros(shape, dtype=spec.dtype.numpy)
    return arrays
