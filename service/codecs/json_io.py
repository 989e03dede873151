"""JSON in and out for both wire protocols.

Parsing uses orjson. orjson refuses the NaN / Infinity / -Infinity tokens that TF Serving (rapidjson with
kParseNanAndInfFlag) accepts, so a body that orjson refuses and that mentions one of them is parsed again with
the stdlib, after a cheap depth check so that the fallback can neither exhaust the stack nor spend long on
hostile nesting. The fast path pays nothing for any of this.

Writing uses orjson with numpy serialization, so float32 tensors come out in their shortest float32 form (0.1,
not 0.10000000149011612), as TF Serving writes them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidArgument

# orjson's own nesting limit; the stdlib fallback is held to the same one.
MAX_DEPTH = 1024

# A JSON string literal (escapes included), removed before counting brackets so that "[[[" inside text is
# no nesting. An unterminated literal runs to the end of the body: the pattern then never fails once it
# starts, which keeps the scan linear (one that must find the closing quote is quadratic on '"\\"\\"\\"...').
# Brackets after an unterminated literal are never parsed as nesting by the stdlib either.
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)
_BRACKETS = b"[]{}"
# What one JSON object counts as in ``values_bound`` (an empty dict is 64 bytes, one entry 184; a float 24).
OBJECT_WEIGHT = 4
# Every error body is shorter than this many bytes (and characters), whatever the request held.
MAX_ERROR_BODY = 1000
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)


class MalformedJson(InvalidArgument):
    """A body that does not parse as JSON. The message (``malformed JSON: <detail>``) is the V2 APIs'; TF Serving's
    front ends word it from ``reason`` (the parser's words, without a position), ``offset`` (where it stopped, None
    when not known) and ``empty`` (a body with nothing in it): ``service.api.tfserving_errors``."""

    def __init__(self, detail: str, reason: str | None = None, offset: int | None = None, empty: bool = False) -> None:
        super().__init__(f"malformed JSON: {detail}")
        self.detail = detail
        self.reason = detail if reason is None else reason
        self.offset = offset
        self.empty = empty

    def __reduce__(self) -> tuple[type[MalformedJson], tuple[str, str, int | None, bool]]:
        # Raised in decoding worker processes too: it must cross back whole.
        return (type(self), (self.detail, self.reason, self.offset, self.empty))


def parse_object(body: bytes, max_values: int | None = None) -> dict[str, Any]:
    """Parse a request body that must be a JSON object; InvalidArgument("malformed JSON: ...") otherwise.

    ``max_values`` bounds the values (numbers, strings, lists, objects) the body may hold, checked before
    parsing (``values_bound``): each becomes a Python object, so 64 MB of ``[],`` would take 1.9 GB to parse.
    """
    if max_values is not None and len(body) > max_values:
        found = values_bound(body)
        if found > max_values:
            raise InvalidArgument(
                f"the body holds up to {found} JSON values, more than the limit of {max_values}; "
                "send large tensors in the binary tensor format"
            )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        value = _parse_fallback(body, error)
    if not isinstance(value, dict):
        raise InvalidArgument(f"malformed JSON: the body must be a JSON object, got {json_type(value)}")
    return value


def _parse_fallback(body: bytes, error: orjson.JSONDecodeError) -> Any:
    """The error path: accept NaN/Infinity tokens like TF Serving does, refuse everything else."""
    if "depth limit" in str(error):
        raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels") from None
    if b"NaN" not in body and b"Infinity" not in body:
        raise MalformedJson(str(error), error.msg, error.pos, empty=not body.strip()) from None
    if nesting_depth(body) > MAX_DEPTH:
        raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels") from None
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise MalformedJson("nested too deeply") from None
    except json.JSONDecodeError as stdlib_error:
        raise MalformedJson(str(stdlib_error), stdlib_error.msg, stdlib_error.pos) from None
    except (ValueError, UnicodeDecodeError) as stdlib_error:
        raise MalformedJson(str(stdlib_error)) from None


def values_bound(body: bytes) -> int:
    """An upper bound of the values in a JSON text, from C-speed byte counts: a value is the first in its
    container (after '[' or '{'), follows a ',' or (an object member's value) a ':'; an object's keys count
    as values too. An object counts as ``OBJECT_WEIGHT`` values, since a Python dict takes about four times
    the memory of a float or a short string. Separators inside string literals make the bound larger."""
    return 1 + body.count(b",") + body.count(b"[") + OBJECT_WEIGHT * body.count(b"{") + body.count(b":")


def nesting_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text, brackets inside string literals not counted (vectorized)."""
    brackets = _STRING_LITERAL.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    steps = np.where(opens, 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def dumps(document: object) -> bytes:
    """Serialize a response; numpy arrays (C-contiguous) and scalars inside are written natively."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """``{"error": message}``: the error shape of both TF Serving REST and the Open Inference Protocol.

    The one place that keeps error bodies short: messages quote names and values from the request, and a
    message that is still too long once written (escapes included) is cut and ends in "...".
    """
    body = orjson.dumps({"error": message})
    while len(body) >= MAX_ERROR_BODY:
        keep = max(0, len(message) * (MAX_ERROR_BODY - 40) // len(body))
        message = message[:keep] + "..."
        body = orjson.dumps({"error": message})
    return body
