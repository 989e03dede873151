"""The vectorized conversion of numeric tensors agrees with the element-by-element walk on every value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codecs import arrays
from service.errors import InvalidArgument
from service.tensors import DTYPES, DType, dtype_from_tf_name

LIMIT = 10_000
NUMERIC = [d for d in DTYPES if not d.is_string]

# Leaves a JSON body can hold after parsing, the unusual ones included: booleans among numbers, ints beyond
# int64 and beyond any float, NaN and the infinities (the stdlib fallback parses those), numeric strings, null.
LEAVES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 255, 256, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**400, -(10**400)]),
    st.sampled_from([3.0, -0.0, 0.5, 65504.0, 65520.0, 3.4028235e38, 3.5e38, 1.7976931348623157e308]),
    st.booleans(),
    st.sampled_from(["1.5", "NaN", "nan", "Infinity", "", None, {"b64": "AA=="}]),
)


def _rectangular(leaf: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Nested lists of one shape throughout (rank 0-3, empty dimensions included)."""

    @st.composite
    def build(draw: st.DrawFn) -> object:
        shape = draw(st.one_of(st.lists(st.integers(0, 4), max_size=3), st.just([2, 40])))

        def fill(level: int) -> object:
            if level == len(shape):
                return draw(leaf)
            return [fill(level + 1) for _ in range(shape[level])]

        return fill(0)

    return build()


# Rectangular lists (the common case), and anything nested (ragged, scalars beside lists).
VALUES = st.one_of(
    _rectangular(LEAVES),
    _rectangular(st.floats(min_value=-3e38, max_value=3e38)),
    st.recursive(LEAVES, lambda children: st.lists(children, max_size=4), max_leaves=12),
)


def _outcome(convert: object) -> tuple[str, object]:
    try:
        array = convert()  # type: ignore[operator]
    except InvalidArgument as error:
        return "refused", str(error)
    return "array", array


def check_agrees(value: object, dtype: DType) -> None:
    fast_kind, fast = _outcome(lambda: arrays.to_array(value, dtype, "x", LIMIT))
    walk_kind, walked = _outcome(lambda: arrays.walked_array(value, dtype, "x", LIMIT))
    assert fast_kind == walk_kind, (value, dtype.tf_name, fast, walked)
    if fast_kind == "refused":
        assert fast == walked
    else:
        assert isinstance(fast, np.ndarray) and isinstance(walked, np.ndarray)
        assert fast.dtype == walked.dtype and fast.shape == walked.shape, (value, dtype.tf_name)
        assert np.array_equal(fast, walked, equal_nan=fast.dtype.kind == "f"), (value, dtype.tf_name)
        if fast.dtype.kind == "f":
            assert np.array_equal(np.signbit(fast), np.signbit(walked)), (value, dtype.tf_name)


@settings(max_examples=400, deadline=None)
@given(value=VALUES, dtype=st.sampled_from(NUMERIC))
def test_the_fast_path_agrees_with_the_walk(value: object, dtype: DType) -> None:
    check_agrees(value, dtype)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(VALUES, min_size=1, max_size=4), dtype=st.sampled_from(NUMERIC))
def test_stacking_agrees_with_the_walk_of_each_item(items: list[object], dtype: DType) -> None:
    # stack's one conversion of the whole list against the walk of the same list (a batch of items).
    check_agrees(items, dtype)


def test_edge_cases_of_the_float_fast_path() -> None:
    f32, f16, f64 = (dtype_from_tf_name(n) for n in ("DT_FLOAT", "DT_HALF", "DT_DOUBLE"))
    cases = [
        [[1.0, 2.0, 5.0, 0.5]],
        [[1, 2.5]],  # ints among floats
        [[1.0, True]],  # a boolean among floats: refused
        [[math.nan, 1.0, 3.5e38]],  # NaN first hides no out-of-range value
        [[1.0, math.nan, 3.5e38]],
        [[3.5e38, math.nan]],
        [[math.inf, -math.inf, 1.0]],
        [[-3.5e38, 1.0]],
        [[2**70, 1.5]],
        [[10**400, 1.5]],  # an int beyond any float
        [[1.0, 2.0], [3.0]],  # ragged
        [[1.0, 2.0], 3.0],
        [[1.0, "2.0"]],
        [[], []],
        [],
        1.5,
        [[65504.0, 65520.0]],
        [[-0.0, 0.0]],
    ]
    many = [1.0] * 70  # beyond the few values whose min and max Python takes
    cases += [[many], [[*many, math.nan]], [[math.nan, *many, 3.5e38]], [[*many, -math.inf]], [[*many, 70000.0]]]
    cases += [[[*many, 2**70]], [[*many, 10**400]], [[*many, True]], [many, many[1:]]]
    for value in cases:
        for dtype in (f32, f16, f64):
            check_agrees(value, dtype)


def test_the_common_float_case_sets_up_nothing_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small rectangular body of in-range numbers for a float tensor: no np.errstate context and no np.finfo
    # lookup per request (each cost microseconds, several times the conversion itself).
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("called on the fast path")

    monkeypatch.setattr(np, "errstate", refuse)
    monkeypatch.setattr(np, "finfo", refuse)
    f32 = dtype_from_tf_name("DT_FLOAT")
    array = arrays.stack([[5.1, 3.5, 1.4, 0.2]], f32, "instances", lambda i: f"instances[{i}]", LIMIT)
    assert array.dtype == np.float32 and array.shape == (1, 4)
    many = arrays.to_array([[0.5, 1] * 50], f32, "x", LIMIT)
    assert many.shape == (1, 100) and many.dtype == np.float32
