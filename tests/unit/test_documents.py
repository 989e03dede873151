"""The one helper that turns pydantic's first error into a repository document's one-line message."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, TypeAdapter

from service.documents import Problem, validated


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"{value} is odd")
    return value


class Entry(BaseModel):
    name: str
    count: Annotated[StrictInt, AfterValidator(_even)] = 0


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[Entry] = []


ADAPTER = TypeAdapter(Document)


def problem_of(document: object) -> Problem:
    found: list[Problem] = []

    def explain(problem: Problem) -> str:
        found.append(problem)
        return "explained"

    with pytest.raises(LookupError, match=r"^explained$"):
        validated(ADAPTER, document, explain, LookupError)
    return found[0]


def test_a_valid_document_comes_back_as_its_type() -> None:
    assert validated(ADAPTER, {"entries": [{"name": "a"}]}, str, LookupError) == Document(entries=[Entry(name="a")])


def test_the_first_problem_names_where_what_and_the_value_found() -> None:
    problem = problem_of({"entries": [{"name": "a", "count": 2}, {"name": "b", "count": True}, {"count": "x"}]})
    assert problem.loc == ("entries", 1, "count")
    assert problem.kind == "int_type"
    assert problem.value is True
    assert problem.find(("entries", 1, "name")) == "b"


def test_a_validator_s_own_reason_is_kept_and_a_missing_value_is_none() -> None:
    odd = problem_of({"entries": [{"name": "a", "count": 3}]})
    assert (odd.kind, odd.reason, odd.value) == ("value_error", "3 is odd", 3)
    missing = problem_of({"entries": [{"count": 2}]})
    assert (missing.loc, missing.kind, missing.value) == (("entries", 0, "name"), "missing", None)


def test_an_unknown_field_comes_first_and_by_name_whatever_the_order() -> None:
    problem = problem_of({"zeta": 1, "entries": "not a list", "alpha": 2})
    assert (problem.loc, problem.kind, problem.value) == (("alpha",), "extra_forbidden", 2)


def test_find_returns_none_off_the_document() -> None:
    problem = problem_of({"entries": [{"count": 2}]})
    assert problem.find(("entries", 5, "name")) is None
    assert problem.find(("entries", "name")) is None
    assert problem.find(("entries", 0, "count", "deeper")) is None
