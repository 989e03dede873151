"""TF Serving's rules that do not depend on the wire: what both its REST JSON and its gRPC messages follow.

Classify and regress take serialized tf.Examples on one string input and shape their answers from named outputs
the same way whichever protocol asked; the limits on the examples are the same too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from service.codecs.arrays import Limits, quote
from service.errors import InvalidArgument
from service.tensors import DTYPES, SignatureSpec

_STRING = next(d for d in DTYPES if d.is_string)
# Serialized examples may take this many bytes per allowed element (a float feature value takes 4 or 5).
BYTES_PER_ELEMENT = 8


def examples_input(signature: SignatureSpec) -> str:
    """The one string input a classify/regress signature takes its serialized tf.Examples on."""
    strings = [name for name, spec in signature.inputs.items() if spec.dtype.is_string]
    if len(signature.inputs) != 1 or len(strings) != 1:
        raise InvalidArgument(
            f"signature {quote(signature.name)} must take exactly one string input of serialized tf.Example"
        )
    return strings[0]


def check_example_count(count: int, limits: Limits, where: str = "'examples'") -> None:
    """Refuse an empty list of examples, or more of them than a string tensor may hold."""
    if count == 0:
        raise InvalidArgument(f"{where} is an empty list")
    strings = limits.for_dtype(_STRING)
    if count > strings:
        raise InvalidArgument(f"{where} has {count} examples, more than the limit of {strings}")


def max_example_bytes(limits: Limits) -> int:
    """The serialized bytes all the examples of one request may take (a context counts in every example)."""
    return limits.elements * BYTES_PER_ELEMENT


def check_example_bytes(total: int, limits: Limits, where: str = "'examples'") -> None:
    limit = max_example_bytes(limits)
    if total > limit:
        raise InvalidArgument(
            f"{where} serialize to more than the limit of {limit} bytes (the context counts in every example)"
        )


@dataclass(frozen=True, slots=True)
class Classifications:
    """One list of (label, score) per example, as ClassificationResult holds them."""

    labels: list[list[str]]
    scores: np.ndarray  # float32 [batch_size, num_classes]


def classifications(outputs: Mapping[str, np.ndarray]) -> Classifications:
    """The classes and scores of a classification signature's outputs (``classes`` and/or ``scores``).

    A missing ``classes`` output gives empty labels, a missing ``scores`` output scores of 0, as the
    ClassificationResult proto would.
    """
    classes, scores = outputs.get("classes"), outputs.get("scores")
    reference = scores if scores is not None else classes
    if reference is None:
        raise InvalidArgument("the classification signature produced neither 'classes' nor 'scores'")
    if reference.ndim != 2:
        raise InvalidArgument(
            f"classification outputs must have shape [batch_size, num_classes], got {list(reference.shape)}"
        )
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise InvalidArgument(f"'classes' has shape {list(classes.shape)} but 'scores' has {list(scores.shape)}")
    batch, width = reference.shape
    labels = (
        [[_label(item) for item in row] for row in classes.tolist()]
        if classes is not None
        else [[""] * width for _ in range(batch)]
    )
    values = scores.astype(np.float32, copy=False) if scores is not None else np.zeros((batch, width), np.float32)
    return Classifications(labels, values)


def _label(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


def regression_values(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A regression signature's ``outputs``, of shape [batch_size] or [batch_size, 1], as a float32 vector."""
    if "outputs" not in outputs:
        raise InvalidArgument("regression signature has no output named 'outputs'")
    return regression_vector(outputs["outputs"])


def regression_vector(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidArgument(
            f"the regression output must have shape [batch_size] or [batch_size, 1], got {list(array.shape)}"
        )
    return array.astype(np.float32, copy=False)
