"""TensorFlow's errors as one-line messages and domain errors, the same whichever runner raised them."""

from __future__ import annotations

import re
from typing import Any

import tensorflow as tf

from service.errors import Code, InvalidArgument, ServingError, error_for_code
from service.runtime.saved_model import SavedModelError

# Error text quoted back to a client is capped: TF may echo whole input values in it.
_MAX_ERROR_CHARS = 500
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


def decoded(error: UnicodeDecodeError) -> str:
    return bytes(error.object).decode("utf-8", errors="replace")


def cause(error: BaseException) -> str:
    """What went wrong, in one line, for a load failure or an unexpected run failure."""
    if isinstance(error, SavedModelError):
        return str(error)
    if isinstance(error, tf.errors.OpError):
        return tf_error_line(str(error.message))
    return f"{type(error).__name__}: {tf_error_line(str(error))}"


def op_error(signature: str, error: Any) -> ServingError:
    """A TensorFlow op's failure under its own canonical code: RESOURCE_EXHAUSTED stays 429, OUT_OF_RANGE 400."""
    line = tf_error_line(str(error.message))
    try:
        code = Code(error.error_code)
    except ValueError:
        code = Code.UNKNOWN
    if code is Code.INVALID_ARGUMENT:  # bad data: the message alone, as TF Serving words it
        return InvalidArgument(line)
    return error_for_code(code, f"signature {signature!r} failed: {line}")
