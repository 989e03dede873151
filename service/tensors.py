"""Tensor vocabulary shared by the runtime, the codecs and the data plane.

One table maps every supported dtype between TensorFlow's names (as TF Serving prints them), the Open Inference
Protocol's datatypes and numpy, so that no module keeps its own copy of the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Signature method names, as SavedModel signature defs and TF Serving metadata spell them.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class DType:
    """One element type under its three names."""

    tf_name: str
    v2_name: str
    numpy: np.dtype[np.generic]

    @property
    def is_string(self) -> bool:
        return self.tf_name == "DT_STRING"

    @property
    def is_bool(self) -> bool:
        return self.tf_name == "DT_BOOL"

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(self.numpy, np.integer)

    @property
    def is_floating(self) -> bool:
        return np.issubdtype(self.numpy, np.floating)


DTYPES: tuple[DType, ...] = (
    DType("DT_BOOL", "BOOL", np.dtype(np.bool_)),
    DType("DT_UINT8", "UINT8", np.dtype(np.uint8)),
    DType("DT_UINT16", "UINT16", np.dtype(np.uint16)),
    DType("DT_UINT32", "UINT32", np.dtype(np.uint32)),
    DType("DT_UINT64", "UINT64", np.dtype(np.uint64)),
    DType("DT_INT8", "INT8", np.dtype(np.int8)),
    DType("DT_INT16", "INT16", np.dtype(np.int16)),
    DType("DT_INT32", "INT32", np.dtype(np.int32)),
    DType("DT_INT64", "INT64", np.dtype(np.int64)),
    DType("DT_HALF", "FP16", np.dtype(np.float16)),
    DType("DT_FLOAT", "FP32", np.dtype(np.float32)),
    DType("DT_DOUBLE", "FP64", np.dtype(np.float64)),
    # Strings travel as numpy object arrays of bytes.
    DType("DT_STRING", "BYTES", np.dtype(object)),
)

_BY_TF_NAME = {d.tf_name: d for d in DTYPES}
_BY_V2_NAME = {d.v2_name: d for d in DTYPES}


def dtype_from_tf_name(name: str) -> DType:
    """Look up a dtype by its TensorFlow name (``DT_FLOAT``); KeyError names the unsupported type."""
    try:
        return _BY_TF_NAME[name]
    except KeyError:
        raise KeyError(f"unsupported TensorFlow dtype {name}") from None


def dtype_from_v2_name(name: str) -> DType | None:
    """Look up a dtype by its Open Inference Protocol datatype (``FP32``); None when unknown."""
    return _BY_V2_NAME.get(name)


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a signature. ``shape`` uses -1 for unknown dimensions; None is unknown rank."""

    name: str
    dtype: DType
    shape: tuple[int, ...] | None
    tensor_name: str = ""

    def describe_shape(self) -> str:
        return "unknown" if self.shape is None else "[" + ", ".join(str(d) for d in self.shape) + "]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))

    @property
    def is_batched(self) -> bool:
        """True when the first dimension is the batch dimension (unknown size), as Keras exports it."""
        return self.shape is not None and len(self.shape) > 0 and self.shape[0] == -1

    def example_shape(self, batch_size: int) -> tuple[int, ...]:
        """A concrete shape the spec accepts: an unknown first dimension is ``batch_size``, later unknown ones 1;
        an unknown rank is read as a batch of scalars, the most common case."""
        if self.shape is None:
            return (batch_size,)
        if not self.shape:
            return ()
        first, *rest = self.shape
        return (batch_size if first == -1 else first, *(1 if dim == -1 else dim for dim in rest))


@dataclass(frozen=True)
class SignatureSpec:
    """One signature of a SavedModel: its method and its named inputs and outputs."""

    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    # Extra facts a protocol may need (e.g. the input key of a classify signature); never request data.
    notes: Mapping[str, str] = field(default_factory=dict)
