"""Client-given timeouts, read the same way by every front end (REST headers and parameters, gRPC parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import InvalidArgument

# Longer timeouts are refused: a typo should not read as "for ever".
_MAX_TIMEOUT_S = 24 * 3600.0


def positive_seconds(value: object, unit_s: float, where: str, unit: str) -> float:
    """A client's timeout given in ``unit`` (``unit_s`` seconds each), as seconds; a clear 400 when it is not a
    positive number of at most a day."""
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else -1.0
    except ValueError:
        number = -1.0
    seconds = number * unit_s
    if not 0 < seconds <= _MAX_TIMEOUT_S:  # also false for NaN
        shown = str(value)[:40]
        raise InvalidArgument(f"{where} must be a positive number of {unit} (at most a day), got {shown!r}")
    return seconds


def timeout_parameter(parameters: Mapping[str, Any]) -> float | None:
    """An Open Inference request's ``timeout`` parameter (microseconds, as Triton's clients send it) in seconds,
    or None; REST and gRPC read it alike."""
    value = parameters.get("timeout")
    return None if value is None else positive_seconds(value, 1e-6, "parameter 'timeout'", "microseconds")
