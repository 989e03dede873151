"""Parsed JSON values <-> numpy arrays, one set of rules for both wire protocols.

Numeric tensors take a fast path: one C-level scan of the leaf types, then one ``np.asarray`` with the
target dtype. The scan is what keeps numpy from silently turning ``true`` into 1.0 or ``"1.5"`` into 1.5.
Anything the fast path does not vouch for is walked element by element, which also finds the exact position
of a bad value for the error message. String tensors are always walked (each element is converted anyway).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, cast

import numpy as np
import orjson

from service.codecs.json_io import json_type
from service.errors import Internal, InvalidArgument
from service.tensors import DType, TensorSpec

# numpy's own limit on the number of dimensions; also bounds every recursion below.
MAX_RANK = 64

# How string elements that are not to be written as text come out: TF Serving's {"b64": ...} object, or
# (Open Inference Protocol JSON, which has no such object) the base64 text itself.
BinaryStyle = Literal["b64_object", "base64_text"]

# TF Serving writes bytes, not text, for string outputs whose name ends like this.
BYTES_SUFFIX = "_bytes"

# Request-supplied names and values appear in messages only this long, and lists of names only this many.
_MAX_ECHO = 80
_MAX_LISTED = 8

_NONFINITE = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


class _BadValueError(Exception):
    """One element cannot be converted; ``reason`` says why, the caller adds where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- messages --


def quote(name: str) -> str:
    """A request-supplied name, quoted and cut short, safe to put in an error message."""
    return repr(name if len(name) <= _MAX_ECHO else name[:_MAX_ECHO] + "...")


def echo(name: str) -> str:
    """A request-supplied name cut short but bare, as TF Serving's messages name things (``quote`` quotes)."""
    return name if len(name) <= _MAX_ECHO else name[:_MAX_ECHO] + "..."


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _listing(names: Collection[str]) -> str:
    if not names:
        return "none"
    shown = [quote(n) for _, n in zip(range(_MAX_LISTED), names, strict=False)]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def _describe(value: object) -> str:
    return 'a {"b64": ...} object' if is_b64_object(value) else json_type(value)


def _index(path: Sequence[int]) -> str:
    return "".join(f"[{i}]" for i in path)


# -- checks the data plane and both protocols share --


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes superscript and full-width digits, which int() refuses or reads."""
    return text.isascii() and text.isdigit()


def check_shape(spec: TensorSpec, array: np.ndarray, where: str | None = None) -> None:
    """Refuse an array whose shape the signature does not accept (-1 matches any size)."""
    if not spec.accepts_shape(tuple(array.shape)):
        label = where or f"input {quote(spec.name)}"
        raise InvalidArgument(f"{label} expects shape {spec.describe_shape()}, got {format_shape(array.shape)}")


# Collections with a set's constant-time membership test, as concrete types: an isinstance check against the
# KeysView ABC costs microseconds per call, which every request pays.
_SET_LIKE: tuple[type, ...] = (set, frozenset, type({}.keys()))


def check_names(
    given: Collection[str],
    expected: Collection[str],
    *,
    kind: str,
    where: str,
    owner: str,
    require_all: bool = True,
) -> None:
    """Refuse names the signature does not have and (with ``require_all``) names it has that are missing.

    Linear in both: a request may name tens of thousands of things, and a scan of a list per name is quadratic.
    """
    given_set = given if isinstance(given, _SET_LIKE) else set(given)
    expected_set = expected if isinstance(expected, _SET_LIKE) else set(expected)
    unknown = [n for n in given if n not in expected_set]
    if unknown:
        raise InvalidArgument(
            f"{where} names unknown {kind} {_listing(unknown)}; {owner} has {kind}s {_listing(expected)}"
        )
    missing = [n for n in expected if n not in given_set] if require_all else []
    if missing:
        raise InvalidArgument(
            f"{where} is missing {kind} {_listing(missing)}; {owner} has {kind}s {_listing(expected)}"
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may make the server build, counted in what costs.

    ``elements``: the cost of one tensor (see ``element_cost``); ``strings``: elements of one string tensor,
    each a Python object on the way in and a TensorFlow string on the way to the model (far more than a number);
    ``json_values``: the values (numbers, strings, lists, objects) a JSON body may hold, counted before parsing.
    """

    elements: int
    strings: int | None = None  # None: as ``elements``
    json_values: int | None = None  # None: no bound before parsing

    def for_dtype(self, dtype: DType) -> int:
        if dtype.is_string and self.strings is not None:
            return min(self.elements, self.strings)
        return self.elements


def as_limits(limits: int | Limits) -> Limits:
    """A bare number is a tensor element limit, as the codecs' callers passed before ``Limits`` existed."""
    return limits if isinstance(limits, Limits) else Limits(limits)


def element_cost(shape: Sequence[int]) -> int:
    """Elements of a shape, a zero dimension counted as one: a [0, 2**63] or [20_000_000, 0] tensor holds no
    values but its other dimensions still cost (numpy cannot make the first, a model answers rows of the
    second), and the product can no longer hide a huge dimension behind a zero."""
    cost = 1
    for size in shape:
        cost *= max(size, 1)
    return cost


def check_cost(shape: Sequence[int], where: str, limit: int) -> None:
    """Refuse a shape whose ``element_cost`` is beyond ``limit``."""
    cost = element_cost(shape)
    if cost <= limit:
        return
    if 0 not in shape and cost < 2**63:
        raise InvalidArgument(f"{where} has {cost} elements, more than the limit of {limit}")
    counted = "more elements than int64 can count" if cost >= 2**63 else f"{cost} elements"
    if 0 in shape:
        counted += " (a zero dimension does not make the others free)"
    raise InvalidArgument(f"{where} has shape {_short_shape(shape)}: {counted}; the limit is {limit} elements")


def _short_shape(shape: Sequence[int]) -> str:
    text = format_shape(shape)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "...]"


# -- base64 --


def is_b64_object(value: object) -> bool:
    """TF Serving's binary string: an object whose one key is "b64", holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(text: str) -> bytes:
    """Standard base64, missing padding tolerated (as absl's Base64Unescape does); ValueError if invalid."""
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# -- JSON -> numpy --


def to_array(
    value: object,
    dtype: DType,
    where: str,
    max_elements: int | Limits,
    *,
    b64_objects: bool = True,
    label: str | None = None,
) -> np.ndarray:
    """Convert a parsed JSON value (nested lists or a scalar) into an array of ``dtype``.

    ``where`` names the value in messages (``instances[2]``); ``label`` names the dtype there (default the
    TensorFlow name); ``b64_objects`` allows ``{"b64": ...}`` elements in string tensors.
    """
    limit = as_limits(max_elements).for_dtype(dtype)
    array = None if dtype.is_string else _fast_numeric(value, dtype)
    if array is None:
        return walked_array(value, dtype, where, limit, b64_objects=b64_objects, label=label)
    check_cost(array.shape, where, limit)
    return array


def walked_array(
    value: object, dtype: DType, where: str, limit: int, *, b64_objects: bool = True, label: str | None = None
) -> np.ndarray:
    """``to_array`` without the fast path: every element checked on its own. The reference the fast path must
    agree with, and the one that words every refusal."""
    shape, leaves = _walk(value, where)
    check_cost(shape, where, limit)
    return _from_leaves(leaves, shape, dtype, where, label or dtype.tf_name, b64_objects)


def stack(
    items: Sequence[object],
    dtype: DType,
    where: str,
    item_where: Callable[[int], str],
    max_elements: int | Limits,
) -> np.ndarray:
    """Stack values along a new first (batch) axis; they must all have the same shape.

    One conversion of the whole list is tried first; only when that fails is each item converted alone, so
    that a message names the item (``item_where(i)``) and the first item it disagrees with.
    """
    limit = as_limits(max_elements).for_dtype(dtype)
    array = None if dtype.is_string or not items else _fast_numeric(items, dtype)
    if array is not None:
        check_cost(array.shape, where, limit)
        return array
    if not items:
        return to_array([], dtype, where, max_elements)
    parts: list[np.ndarray] = []
    total = 0
    for i, item in enumerate(items):
        part = to_array(item, dtype, item_where(i), max_elements)
        if parts and part.shape != parts[0].shape:
            raise InvalidArgument(f"{item_where(i)} has a different shape than {item_where(0)} (ragged)")
        total += element_cost(part.shape)
        if total > limit:
            raise InvalidArgument(f"{where} has more than the limit of {limit} elements")
        parts.append(part)
    return np.stack(parts)


def flatten_v2_data(
    data: object, dtype: DType, where: str, max_elements: int | Limits, *, label: str | None = None
) -> np.ndarray:
    """Open Inference Protocol tensor data as a 1-D array in row-major order.

    The data may be flat or nested; like Triton, any nesting is accepted because only the element order counts
    (the request's ``shape`` gives the tensor its shape). ``{"b64": ...}`` objects are not part of V2 JSON.
    """
    if not isinstance(data, list):
        raise InvalidArgument(f"{where} must be a list, got {json_type(data)}")
    try:
        array = to_array(data, dtype, where, max_elements, b64_objects=False, label=label)
    except InvalidArgument:
        if not any(isinstance(item, list) for item in data):
            raise
        # Irregular nesting (or a bad element): flatten first, so any remaining error names a flat position.
        array = to_array(_flatten_any(data, where), dtype, where, max_elements, b64_objects=False, label=label)
    return array.reshape(-1)


def _flatten_any(value: list[object], where: str) -> list[object]:
    out: list[object] = []

    def visit(node: list[object], depth: int) -> None:
        if depth > MAX_RANK:
            raise InvalidArgument(f"{where} is nested deeper than {MAX_RANK} levels")
        for item in node:
            if isinstance(item, list):
                visit(item, depth + 1)
            else:
                out.append(item)

    visit(value, 1)
    return out


def _leaves(value: object) -> list[object] | None:
    """The scalars at the leaf level (the depth of the first element), or None if irregular.

    All iteration happens in C (chain + list), which costs far less than the conversion it guards.
    """
    depth = 0
    node = value
    while isinstance(node, list) and node:
        if depth == MAX_RANK:
            return None
        node = node[0]
        depth += 1
    levels = depth + 1 if isinstance(node, list) else depth
    items: Any = [value]
    for _ in range(levels):
        items = chain.from_iterable(items)
    try:
        return list(items)
    except TypeError:  # a scalar where a list was expected: irregular, let the walk explain it
        return None


# The largest finite value of each floating dtype, as a Python float (np.finfo per request costs microseconds).
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
_FLOAT64 = np.dtype(np.float64)
_NUMBERS = {int, float}
# Up to this many values, Python's min and max over the leaves cost less than two numpy reductions.
_FEW = 64


def _fast_numeric(value: object, dtype: DType) -> np.ndarray | None:
    """The vectorized conversion, or None when the walk must decide (or explain the error).

    The common case (a rectangular list of Python floats and ints for a floating tensor, every value within
    the dtype's range) costs one leaf scan, a min and a max (Python's for a few values, numpy's for many) and
    one ``np.asarray``; anything unusual (NaN, an infinity, a value beyond the dtype) takes the full check.
    """
    leaves = _leaves(value)
    if leaves is None:
        return None
    types = set(map(type, leaves))
    target = dtype.numpy
    kind = target.kind
    try:
        if kind == "f":
            if not types <= _NUMBERS:
                return None
            largest = _FLOAT_MAX[target]
            numbers = cast("list[float]", leaves)
            # Python's max and min never pick a NaN unless it comes first, and then the comparison fails: a
            # NaN or an infinity (or a value beyond the dtype) sends the values to the full check.
            if len(numbers) <= _FEW and numbers and not -largest <= min(numbers) <= max(numbers) <= largest:
                with np.errstate(over="ignore", invalid="ignore"):
                    return _floating(np.asarray(value, dtype=np.float64), dtype)
            doubles = np.asarray(value, dtype=np.float64)
            if target == _FLOAT64:
                return doubles
            # Many values: numpy's min and max (a NaN makes both NaN, and the comparison fails).
            if len(numbers) > _FEW and not -largest <= doubles.min() <= doubles.max() <= largest:
                with np.errstate(over="ignore", invalid="ignore"):
                    return _floating(doubles, dtype)
            return doubles.astype(target)
        with np.errstate(over="ignore", invalid="ignore"):
            if kind == "b":
                return np.asarray(value, dtype=np.bool_) if types <= {bool} else None
            if kind in "iu":
                if types <= {int}:
                    # numpy raises OverflowError for Python ints out of the dtype's range.
                    return np.asarray(value, dtype=target)
                if types <= {float}:
                    return _integral(np.asarray(value, dtype=np.float64), dtype)
    except (ValueError, TypeError, OverflowError):  # ragged, or out of range
        return None
    return None


def _floating(doubles: np.ndarray, dtype: DType) -> np.ndarray | None:
    """Python floats (doubles) as ``dtype``; None (the walk explains) if a finite one is beyond its range.

    NaN and the infinities are values here (the NaN / Infinity tokens, as TF Serving accepts them), so a body
    holding one still converts in one vectorized step instead of element by element.
    """
    if dtype.numpy == doubles.dtype or not doubles.size:
        return doubles.astype(dtype.numpy, copy=False)
    largest = _FLOAT_MAX[dtype.numpy]
    magnitude = np.abs(doubles)
    if (magnitude[np.isfinite(magnitude)] > largest).any():
        return None
    return doubles.astype(dtype.numpy)


def _integral(floats: np.ndarray, dtype: DType) -> np.ndarray | None:
    """Whole-valued floats (3.0) for an integer tensor; None if any is fractional, non-finite or too big."""
    if floats.size:
        low, high = _int_range(dtype)
        if not (
            np.isfinite(floats).all()
            and (np.trunc(floats) == floats).all()
            and floats.min() >= low
            and floats.max() < high + 1  # a power of two, exact as a float
        ):
            return None
    return floats.astype(dtype.numpy)


def _walk(value: object, where: str) -> tuple[tuple[int, ...], list[object]]:
    """The shape (from the first element at each level) and the leaves; anything irregular is ragged."""
    shape: list[int] = []
    node = value
    while isinstance(node, list):
        if len(shape) == MAX_RANK:
            raise InvalidArgument(f"{where} is nested deeper than {MAX_RANK} levels")
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    leaves: list[object] = []
    _collect(value, tuple(shape), [], where, leaves)
    return tuple(shape), leaves


def _collect(node: object, shape: tuple[int, ...], path: list[int], where: str, leaves: list[object]) -> None:
    level = len(path)
    if level == len(shape):
        if isinstance(node, list):
            raise _ragged(where, path)
        leaves.append(node)
        return
    if not isinstance(node, list) or len(node) != shape[level]:
        raise _ragged(where, path)
    if level + 1 == len(shape):
        # The innermost lists: one scan instead of a call per element.
        for i, item in enumerate(node):
            if isinstance(item, list):
                raise _ragged(where, [*path, i])
        leaves.extend(node)
        return
    for i, child in enumerate(node):
        path.append(i)
        _collect(child, shape, path, where, leaves)
        path.pop()


def _ragged(where: str, path: list[int]) -> InvalidArgument:
    first = [*path[:-1], 0]
    return InvalidArgument(f"{where}{_index(path)} has a different shape than {where}{_index(first)} (ragged)")


def _from_leaves(
    leaves: list[object],
    shape: tuple[int, ...],
    dtype: DType,
    where: str,
    label: str,
    b64_objects: bool,
) -> np.ndarray:
    converted: list[object] = []
    for i, leaf in enumerate(leaves):
        try:
            converted.append(_element(leaf, dtype, label, b64_objects))
        except _BadValueError as bad:
            position = _index([int(k) for k in np.unravel_index(i, shape)]) if shape else ""
            raise InvalidArgument(f"{where}{position}: {bad.reason}") from None
    if dtype.is_string:
        # Filled element by element: np.array would try to look inside the bytes objects.
        strings = np.empty(len(converted), dtype=object)
        strings[:] = converted
        return strings.reshape(shape)
    with np.errstate(over="ignore"):
        return np.array(converted, dtype=dtype.numpy).reshape(shape)


def _element(value: object, dtype: DType, label: str, b64_objects: bool) -> object:
    """One scalar, checked against the dtype's rules (TF Serving's: no coercion between JSON types)."""
    if dtype.is_string:
        return _string_element(value, label, b64_objects)
    if dtype.is_bool:
        if isinstance(value, bool):
            return value
        raise _BadValueError(f"expected true or false ({label}), got {_describe(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        wanted = "an integer" if dtype.is_integer else "a number"
        raise _BadValueError(f"expected {wanted} ({label}), got {_describe(value)}")
    if dtype.is_integer:
        return _integer_element(value, dtype, label)
    return _float_element(value, dtype, label)


def _integer_element(value: int | float, dtype: DType, label: str) -> int:
    if isinstance(value, float) and not value.is_integer():  # also false for NaN and infinities
        raise _BadValueError(f"{_short(value)} is not an integer ({label})")
    low, high = _int_range(dtype)
    if not low <= value <= high:
        raise _BadValueError(f"{_short(value)} is out of range for {label} [{low}, {high}]")
    return int(value)


def _int_range(dtype: DType) -> tuple[int, int]:
    info = np.iinfo(cast("np.dtype[np.integer[Any]]", dtype.numpy))
    return int(info.min), int(info.max)


def _float_element(value: int | float, dtype: DType, label: str) -> float:
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise _BadValueError(f"{_short(value)} is out of range for {label}") from None
    if math.isfinite(number) and abs(number) > float(np.finfo(cast("np.dtype[np.floating[Any]]", dtype.numpy)).max):
        raise _BadValueError(f"{_short(value)} is out of range for {label}")
    return number


def _string_element(value: object, label: str, b64_objects: bool) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape, possible through the stdlib parser
            raise _BadValueError("is not valid Unicode text") from None
    if b64_objects and is_b64_object(value):
        assert isinstance(value, dict)
        try:
            return decode_b64(value["b64"])
        except ValueError:  # binascii.Error, or non-ASCII text
            raise _BadValueError('invalid base64 in {"b64": ...}') from None
    wanted = 'a string or {"b64": ...} object' if b64_objects else "a string"
    raise _BadValueError(f"expected {wanted} ({label}), got {_describe(value)}")


# -- numpy -> JSON --


def to_json_value(array: np.ndarray, name: str = "", *, binary: BinaryStyle = "b64_object") -> Any:
    """An array as a value ready for ``json_io.dumps`` (nested like the array; 0-d gives a scalar).

    Finite numeric arrays are returned as (C-contiguous) arrays or numpy scalars that orjson writes natively.
    Non-finite floats become the NaN / Infinity / -Infinity tokens TF Serving writes (orjson alone would
    write null). String elements become text when they are UTF-8, else base64 (``binary``); in the TF Serving
    style, outputs named ``*_bytes`` are always base64.
    """
    kind = array.dtype.kind
    if kind in "OSU":
        force = binary == "b64_object" and name.endswith(BYTES_SUFFIX)
        values = [_string_json(item, force, binary) for item in array.ravel().tolist()]
        return _nest(values, array.shape)
    if kind not in "biuf":
        raise Internal(f"output {quote(name)} has dtype {array.dtype}, which has no JSON form")
    if kind == "f" and not np.isfinite(array).all():
        return _nest([_json_float(x) for x in array.ravel()], array.shape)
    if array.ndim == 0:
        return array[()]
    return np.ascontiguousarray(array)


def _json_float(value: np.floating[Any]) -> object:
    if math.isfinite(value):
        return value
    return orjson.Fragment(_NONFINITE[str(float(value))])


def _string_json(item: object, force_b64: bool, binary: BinaryStyle) -> object:
    data = item.encode("utf-8") if isinstance(item, str) else item
    if not isinstance(data, bytes):
        raise Internal(f"a string tensor holds a {type(item).__name__}, not bytes")
    if not force_b64:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = base64.b64encode(data).decode("ascii")
    return {"b64": text} if binary == "b64_object" else text


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """Rebuild nested lists of ``shape`` from row-major elements."""
    if not shape:
        return flat[0]
    if 0 in shape:
        return np.empty(shape).tolist()  # only empty lists inside, but nested correctly
    rows: list[Any] = flat
    for size in reversed(shape[1:]):
        rows = [rows[i : i + size] for i in range(0, len(rows), size)]
    return rows
