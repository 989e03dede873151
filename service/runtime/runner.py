"""What the servable asks of a signature runner, and the value conversions both runners share.

Two runners serve a SavedModel's signatures: ``session`` (session.py: the MetaGraph in a ``tf.compat.v1.Session``,
signatures run by tensor name, as TF Serving does) and ``function`` (functions.py: ``tf.saved_model.load`` and
its concrete functions). The loader picks one per version (``RTSERVE_SIGNATURE_RUNNER``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from service.tensors import DType, SignatureSpec

RunnerName = Literal["session", "function"]
# auto: the session runner where it serves the version, else the function runner.
RunnerChoice = Literal["auto", "session", "function"]

# One signature's call: validated numpy inputs by input key -> numpy outputs by output key. TensorFlow's own
# errors (OpError, the UnicodeDecodeError of an undecodable message) pass through for the servable to map.
Call = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class CannotServe(Exception):
    """The session runner cannot serve this version; the message says why (the function runner may)."""


class SignatureRunner(Protocol):
    """One loaded version's signatures, ready to call; owns the model's memory until ``close``."""

    @property
    def name(self) -> RunnerName: ...

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        """The described signatures this runner can call."""
        ...

    @property
    def calls(self) -> Mapping[str, Call]: ...

    @property
    def cancelled(self) -> bool: ...

    def abortable(self) -> AbstractContextManager[None]:
        """A scope in which this thread's calls are stopped by ``abort``."""
        ...

    def abort(self) -> None:
        """Stop the calls in ``abortable`` scopes, now and later (the load deadline)."""
        ...

    def close(self) -> None:
        """Release the model: graph, variables, session."""
        ...


def tf_dtype(dtype: DType) -> Any:
    return tf.as_dtype(types_pb2.DataType.Value(dtype.tf_name))


def as_array(value: Any) -> np.ndarray:
    """A runner's output value as an ndarray: 0-d results come back as numpy scalars, or as bytes for strings."""
    if isinstance(value, np.ndarray):
        return value
    return np.array(value, dtype=object if isinstance(value, bytes) else None)
