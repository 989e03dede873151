"""The session runner: the ``serve`` MetaGraph in a ``tf.compat.v1.Session``, signatures run by tensor name.

This is how TF Serving runs every SavedModel, TF2 ones included: ``loader.load`` imports the graph, restores the
variables and runs the SavedModel's init op (``__saved_model_init_op``, the main op or the legacy init op), so
tables and assets start as the SavedModel says; each signature is then one ``Session::MakeCallable`` over its
TensorInfo names, which skips the eager function-call machinery of ``tf.saved_model.load``'s signatures.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Final

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.util import deprecation

from service.runtime.runner import Call, CannotServe, as_array
from service.runtime.saved_model import SERVE_TAG
from service.runtime.tf_errors import cause
from service.tensors import SignatureSpec


def session_config() -> Any:
    """TensorFlow's configured thread counts, made explicit (a bare Session() reads them from the eager context).

    0 (TensorFlow not configured) lets TensorFlow pick, as it would for the eager path."""
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        allow_soft_placement=True,  # as the eager context: ops with no kernel on a device run on the CPU
    )


def _session_call(session: Any, signature_def: Any, spec: SignatureSpec) -> Call:
    """One callable over the signature's tensor names; CannotServe when its tensors are not in the graph."""
    keys = list(spec.outputs)
    options = config_pb2.CallableOptions(
        feed=[str(signature_def.inputs[key].name) for key in spec.inputs],
        fetch=[str(signature_def.outputs[key].name) for key in keys],
    )
    try:
        # Session::MakeCallable itself, as Keras 1 called it: the public make_callable with a feed list runs
        # Session.run's Python feed handling on every call, which costs about what this model's step does.
        run = session._make_callable_from_options(options)
    except Exception as error:
        raise CannotServe(f"signature {spec.name!r} cannot be made callable ({cause(error)})") from error
    dtypes = [(key, tensor.dtype.numpy) for key, tensor in spec.inputs.items()]

    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = run(*[np.asarray(inputs[key], dtype) for key, dtype in dtypes])
        return {key: as_array(value) for key, value in zip(keys, values, strict=True)}

    return call


class SessionRunner:
    """A version's graph and session; ``abort`` closes the session, which cancels the steps it runs."""

    name: Final = "session"

    def __init__(self, folder: Path, signatures: Mapping[str, SignatureSpec]) -> None:
        self._graph: Any = tf.Graph()
        self._session: Any = tf.compat.v1.Session(graph=self._graph, config=session_config())
        self._lock = threading.Lock()
        self.cancelled = False
        self.calls: dict[str, Call] = {}
        try:
            with self._graph.as_default():
                meta_graph = self._load(folder)
                self.calls = {
                    name: _session_call(self._session, meta_graph.signature_def[name], spec)
                    for name, spec in signatures.items()
                }
        except BaseException:
            self.close()  # one copy of the model in memory: nothing of this one stays behind a fallback
            raise
        self.signatures: Mapping[str, SignatureSpec] = dict(signatures)

    def _load(self, folder: Path) -> Any:
        try:
            with deprecation.silence():  # TF's "use tf.saved_model.load" warning: this is TF Serving's loader
                return tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], str(folder))
        except Exception as error:
            raise CannotServe(f"loader.load failed ({cause(error)})") from error

    def abortable(self) -> AbstractContextManager[None]:
        # Closing the session cancels its steps on every thread; abort comes only at the load deadline, before
        # the version serves, so the warm-up thread is the only one calling it.
        return nullcontext()

    def abort(self) -> None:
        with self._lock:
            self.cancelled = True
            session = self._session
        if session is not None:
            # DirectSession::Close starts its cancellation manager: steps in flight (a while_loop on warm-up
            # zeros, too) end with CancelledError, later ones fail at once.
            session.close()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        self.calls = {}
        if session is not None:
            session.close()
        self._graph = None
