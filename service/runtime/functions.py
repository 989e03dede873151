"""The function runner: ``tf.saved_model.load`` and the loaded object's concrete signature functions.

The runtime's path before the session runner, kept for versions the session runner cannot serve and for
``RTSERVE_SIGNATURE_RUNNER=function``. Load-time work is cancelled per thread through TensorFlow's
CancellationManager.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
import tensorflow as tf

from service.runtime.runner import Call, as_array, tf_dtype
from service.runtime.saved_model import NO_SERVABLE_SIGNATURE, SERVE_TAG, SavedModelError
from service.tensors import SignatureSpec

log = logging.getLogger(__name__)


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


def _function_call(function: Any, spec: SignatureSpec) -> Call:
    input_dtypes = tuple((name, tf_dtype(tensor.dtype)) for name, tensor in spec.inputs.items())

    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = function(**{name: tf.constant(inputs[name], dtype) for name, dtype in input_dtypes})
        return {name: as_array(tensor.numpy()) for name, tensor in outputs.items()}

    return call


class FunctionRunner:
    """A version loaded with ``tf.saved_model.load``; its signatures are the loaded object's functions."""

    name: Final = "function"

    def __init__(self, folder: Path, signatures: Mapping[str, SignatureSpec]) -> None:
        # The loaded object owns the variables the signature functions capture: kept alive with them.
        self._loaded: Any = tf.saved_model.load(str(folder), tags=[SERVE_TAG])
        self.signatures = _callable_signatures(folder, self._loaded, signatures)
        self.calls: dict[str, Call] = {
            name: _function_call(self._loaded.signatures[name], spec) for name, spec in self.signatures.items()
        }
        self._cancellation = _Cancellation()

    @property
    def cancelled(self) -> bool:
        return self._cancellation.cancelled

    def abortable(self) -> AbstractContextManager[None]:
        return self._cancellation.scope()

    def abort(self) -> None:
        self._cancellation.cancel()

    def close(self) -> None:
        self.calls = {}
        self._loaded = None


def _callable_signatures(
    folder: Path, loaded: Any, signatures: Mapping[str, SignatureSpec]
) -> dict[str, SignatureSpec]:
    """The described signatures that the loaded object can call; at least one is required."""
    callable_names = set(loaded.signatures.keys())
    for name in sorted(set(signatures) - callable_names):
        log.warning("%s: signature %r is described but cannot be called; skipping it", folder, name)
    usable = {name: spec for name, spec in signatures.items() if name in callable_names}
    if not usable:
        raise SavedModelError(NO_SERVABLE_SIGNATURE)
    return usable
