"""The TensorFlow runtime: load a SavedModel, describe its signatures, run them on numpy inputs.

Models are loaded with ``tf.saved_model.load`` only (never a Keras loader), so TF1 and TF2 SavedModels and
Keras exports all go through one path. Signatures are described from ``saved_model.pb`` itself, which holds
the exact names, dtypes, shapes and method names that TF Serving reports.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from service.codecs.lookup import find_signature
from service.errors import (
    Code,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ModelLoadError,
    ServingError,
    Unavailable,
    error_for_code,
)
from service.runtime.screening import ALLOW_SETTING, refusable_ops, refusal_message, screen
from service.runtime.warmup_records import WARMUP_FILE, read_warmup_requests
from service.tensors import DEFAULT_SIGNATURE, DType, SignatureSpec, TensorSpec, dtype_from_tf_name

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
FINGERPRINT_PB = "fingerprint.pb"
# Error text quoted back to a client is capped: TF may echo whole input values in it.
_MAX_ERROR_CHARS = 500


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


# -- cancelling load-time work -------------------------------------------------------------------------------

# TensorFlow registers every function call with the CancellationManager that
# ``tensorflow.python.eager.cancellation.context()`` returns, which in TF 2.x is one process-wide global: set it on
# the loader's thread and the inference threads of every other model would register with it too. A per-thread
# reader makes a manager apply to the one thread that set it; nothing else in TensorFlow sets that global.
_cancellation_scope = threading.local()


def _thread_cancellation() -> Any:
    active: _Cancellation | None = getattr(_cancellation_scope, "active", None)
    return None if active is None else active.manager_for_call()


def install_thread_cancellation() -> bool:
    """Make TensorFlow read the active CancellationManager per thread; False when this TensorFlow has no hook."""
    from tensorflow.python.eager import cancellation

    if not callable(getattr(cancellation, "context", None)) or not hasattr(cancellation, "CancellationManager"):
        return False
    cancellation.context = _thread_cancellation
    return True


class _Cancellation:
    """One servable's load-time cancellation: TensorFlow CancellationManagers applied on chosen threads.

    Each function call gets a manager of its own: TensorFlow cancels a call's manager when one of its ops fails,
    so one manager shared by every call would refuse all calls after the first error (a signature that does not
    run on synthetic inputs would cancel the warm-up of every other signature)."""

    def __init__(self) -> None:
        self._available = install_thread_cancellation()
        self._lock = threading.Lock()
        self._current: Any = None
        self.cancelled = False

    def manager_for_call(self) -> Any:
        from tensorflow.python.eager import cancellation

        manager = cancellation.CancellationManager()
        with self._lock:
            self._current = manager
            cancelled = self.cancelled
        if cancelled:
            manager.start_cancel()
        return manager

    @contextmanager
    def scope(self) -> Iterator[None]:
        previous = getattr(_cancellation_scope, "active", None)
        _cancellation_scope.active = self if self._available else None
        try:
            yield
        finally:
            _cancellation_scope.active = previous

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            current = self._current
        if current is not None:
            # Ops in flight on a registered thread (a while_loop on warm-up zeros, too) end with CancelledError.
            current.start_cancel()


# -- reading saved_model.pb ----------------------------------------------------------------------------------


class _SavedModelError(Exception):
    """A problem found while reading the SavedModel files; its message is the cause shown to the operator."""


def _read_saved_model(folder: Path) -> Any:
    """The SavedModel protobuf of a version folder (binary or text format, as TensorFlow itself accepts)."""
    binary, text = folder / SAVED_MODEL_PB, folder / SAVED_MODEL_PBTXT
    if not folder.is_dir():
        raise _SavedModelError("the folder does not exist")
    if not binary.is_file() and not text.is_file():
        raise _SavedModelError(f"no {SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT} in the folder")
    proto = saved_model_pb2.SavedModel()
    try:
        if binary.is_file():
            proto.ParseFromString(binary.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse(text.read_text(encoding="utf-8"), proto)
    except OSError as error:
        raise _SavedModelError(f"cannot read the SavedModel file ({type(error).__name__}: {error})") from error
    except Exception as error:  # protobuf's DecodeError/ParseError, or text that is not UTF-8
        raise _SavedModelError(f"the SavedModel file is not a valid SavedModel protobuf ({error})") from error
    return proto


def _serve_meta_graph(proto: Any) -> Any:
    """The meta graph tagged exactly ``serve``, the one tf.saved_model.load(tags=["serve"]) picks."""
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {SERVE_TAG}:
            return meta_graph
    found = sorted("+".join(sorted(mg.meta_info_def.tags)) or "(none)" for mg in proto.meta_graphs)
    raise _SavedModelError(f"no meta graph tagged {SERVE_TAG!r} (tag sets: {', '.join(found) or 'none'})")


def _tensor_spec(key: str, info: Any) -> TensorSpec:
    """A TensorInfo as a TensorSpec; KeyError when its dtype or encoding is not supported."""
    if info.WhichOneof("encoding") != "name":
        raise KeyError(f"{key!r} is a {info.WhichOneof('encoding')} tensor")
    dtype = dtype_from_tf_name(types_pb2.DataType.Name(info.dtype))
    proto_shape = info.tensor_shape
    shape = None if proto_shape.unknown_rank else tuple(int(dim.size) for dim in proto_shape.dim)
    return TensorSpec(name=key, dtype=dtype, shape=shape, tensor_name=str(info.name))


def _signature_spec(name: str, signature_def: Any) -> SignatureSpec:
    def specs(tensors: Any) -> dict[str, TensorSpec]:
        return {key: _tensor_spec(key, tensors[key]) for key in sorted(tensors)}

    return SignatureSpec(
        name=name,
        method_name=str(signature_def.method_name),
        inputs=specs(signature_def.inputs),
        outputs=specs(signature_def.outputs),
    )


def _describe_meta_graph(folder: Path, meta_graph: Any) -> dict[str, SignatureSpec]:
    signatures: dict[str, SignatureSpec] = {}
    for name in sorted(meta_graph.signature_def):
        if name.startswith("__"):  # TF's own entries such as __saved_model_init_op are not servable
            continue
        try:
            signatures[name] = _signature_spec(name, meta_graph.signature_def[name])
        except KeyError as error:
            log.warning("%s: skipping signature %r: %s", folder, name, error.args[0])
    return signatures


def describe_saved_model(folder: Path) -> dict[str, SignatureSpec]:
    """The servable signatures of a SavedModel's ``serve`` meta graph, read from its protobuf alone.

    Signatures with dtypes or tensor encodings rtserve cannot carry are skipped with a warning.
    """
    folder = Path(folder)
    return _describe_meta_graph(folder, _serve_meta_graph(_read_saved_model(folder)))


def set_signature_methods(saved_model_dir: Path, methods: Mapping[str, str]) -> None:
    """Set signature method names (e.g. classify) in saved_model.pb, as tf.saved_model.save writes predict.

    The stale fingerprint.pb, if any, is removed.
    """
    path = Path(saved_model_dir) / SAVED_MODEL_PB
    proto = _read_saved_model(Path(saved_model_dir))
    missing = set(methods)
    for meta_graph in proto.meta_graphs:
        for name, method in methods.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method
                missing.discard(name)
    if missing:
        raise KeyError(f"{path} has no signature {', '.join(sorted(missing))}")
    staged = path.with_name(path.name + ".tmp")
    staged.write_bytes(proto.SerializeToString())
    staged.replace(path)
    # Its hashes describe the old saved_model.pb; TensorFlow treats the file as optional.
    (path.parent / FINGERPRINT_PB).unlink(missing_ok=True)


# -- error messages ------------------------------------------------------------------------------------------

_NOISE_PREFIXES = ("Graph execution error:", "Detected at node", "<stack traces unavailable>")
_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]$")


def tf_error_line(text: str) -> str:
    """The line of a TensorFlow error message that names the problem, without graph locations or stacks."""
    lines = [line for line in text.splitlines() if line.strip()]
    meaningful = [line for line in lines if not line[0].isspace() and not line.startswith(_NOISE_PREFIXES)]
    line = (meaningful or lines or [text])[0].strip()
    line = _OP_SUFFIX.sub("", _FUNCTION_NODE.sub("", line))
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 3] + "..."


def _decoded(error: UnicodeDecodeError) -> str:
    return bytes(error.object).decode("utf-8", errors="replace")


def _cause(error: BaseException) -> str:
    if isinstance(error, _SavedModelError):
        return str(error)
    if isinstance(error, tf.errors.OpError):
        return tf_error_line(str(error.message))
    return f"{type(error).__name__}: {tf_error_line(str(error))}"


# -- running -------------------------------------------------------------------------------------------------


def _tf_dtype(dtype: DType) -> Any:
    return tf.as_dtype(types_pb2.DataType.Value(dtype.tf_name))


def _to_numpy(tensor: Any) -> np.ndarray:
    value = tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    # 0-d tensors come back as numpy scalars, or as bytes for strings.
    return np.array(value, dtype=object if isinstance(value, bytes) else None)


@dataclass(frozen=True, slots=True)
class _Runner:
    """What one signature call needs, built once at load time."""

    function: Any
    input_dtypes: tuple[tuple[str, Any], ...]

    @classmethod
    def build(cls, function: Any, spec: SignatureSpec) -> _Runner:
        return cls(function, tuple((name, _tf_dtype(tensor.dtype)) for name, tensor in spec.inputs.items()))


def _op_error(signature: str, error: Any) -> ServingError:
    """A TensorFlow op's failure under its own canonical code: RESOURCE_EXHAUSTED stays 429, OUT_OF_RANGE 400."""
    line = tf_error_line(str(error.message))
    try:
        code = Code(error.error_code)
    except ValueError:
        code = Code.UNKNOWN
    if code is Code.INVALID_ARGUMENT:  # bad data: the message alone, as TF Serving words it
        return InvalidArgument(line)
    return error_for_code(code, f"signature {signature!r} failed: {line}")


class TensorFlowServable:
    """One loaded SavedModel version."""

    def __init__(self, folder: Path, loaded: Any, signatures: Mapping[str, SignatureSpec]) -> None:
        self._folder = folder
        # The loaded object owns the variables the signature functions capture: keep it alive with them.
        self._loaded: Any = loaded
        self._runners = {name: _Runner.build(loaded.signatures[name], spec) for name, spec in signatures.items()}
        self._signatures = dict(signatures)
        self._closed = False
        self._cancellation = _Cancellation()

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self._runners.get(signature)
        if runner is None:
            raise self._no_runner(signature)
        try:
            tensors = {name: tf.constant(inputs[name], dtype) for name, dtype in runner.input_dtypes}
            outputs = runner.function(**tensors)
            return {name: _to_numpy(tensor) for name, tensor in outputs.items()}
        except tf.errors.OpError as error:
            raise _op_error(signature, error) from None
        except UnicodeDecodeError as error:
            # TF fails to decode an op's error message when it quotes non-UTF-8 input bytes.
            raise InvalidArgument(tf_error_line(_decoded(error))) from None
        except Exception as error:
            raise Internal(f"signature {signature!r} failed: {_cause(error)}") from error

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
        return self._cancellation.scope()

    def abort(self) -> None:
        self._cancellation.cancel()

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        for spec in self._signatures.values():
            self._warm_up_signature(spec, batch_sizes)
            self._check_aborted()
        self._replay_warmup_requests()

    def _check_aborted(self) -> None:
        if self._cancellation.cancelled:
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
        self._runners = {}
        self._loaded = None
        gc.collect()


class TensorFlowLoader:
    """Loads a version folder as a TensorFlowServable; any failure is a one-line ModelLoadError.

    The graph is screened against an allowlist of op families before TensorFlow sees it (runtime/screening.py);
    ``allowed_file_ops`` names the refused ops that this server lets through anyway.
    """

    def __init__(self, allowed_file_ops: Iterable[str] = ()) -> None:
        self._allowed = frozenset(allowed_file_ops)
        unknown = sorted(self._allowed - refusable_ops())
        if unknown:
            log.warning("%s names ops that are never refused: %s", ALLOW_SETTING, ", ".join(unknown))

    def __call__(self, path: Path) -> TensorFlowServable:
        folder = Path(path)
        try:
            meta_graph = _serve_meta_graph(_read_saved_model(folder))
            findings = screen(meta_graph, self._allowed)
            if findings:
                raise _SavedModelError(refusal_message(findings))
            signatures = _describe_meta_graph(folder, meta_graph)
            loaded = tf.saved_model.load(str(folder), tags=[SERVE_TAG])
            return TensorFlowServable(folder, loaded, _callable_signatures(folder, loaded, signatures))
        except Exception as error:
            raise ModelLoadError(f"cannot load SavedModel from {folder}: {_cause(error)}") from error


def _callable_signatures(
    folder: Path, loaded: Any, signatures: Mapping[str, SignatureSpec]
) -> dict[str, SignatureSpec]:
    """The described signatures that the loaded object can call; at least one is required."""
    callable_names = set(loaded.signatures.keys())
    for name in sorted(set(signatures) - callable_names):
        log.warning("%s: signature %r is described but cannot be called; skipping it", folder, name)
    usable = {name: spec for name, spec in signatures.items() if name in callable_names}
    if not usable:
        raise _SavedModelError("no servable signature with supported dtypes")
    return usable


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
