"""The JSON documents a repository holds (serving.json, MANIFEST.json, reference profiles), checked by pydantic.

Each document's rules are its pydantic type; what stays hand-written is the wording. pydantic's own messages
("Input should be a valid integer") name neither the file nor the entry, so the first error becomes a
:class:`Problem` and each document turns that into its one-line message, the same one whatever pydantic's version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

T = TypeVar("T")
Location = tuple[str | int, ...]
RULE = "document_rule"  # the kind of a problem a document's own validator words in full


def broken_rule(message: str) -> PydanticCustomError:
    """What a document's validator raises for a rule across its fields: ``message`` is reported as it is."""
    return PydanticCustomError(RULE, message)


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with a document: where, of which kind, and the value found there."""

    loc: Location  # as pydantic gives it: ("files", 3, "size"); a dict key's own problem ends in "[key]"
    kind: str  # pydantic's error type: "missing", "int_type", "extra_forbidden", "value_error", ..., or RULE
    value: object  # what the document holds at ``loc`` (the key, for a key); None when it is missing
    reason: str  # a validator's own ValueError text or broken_rule message, else pydantic's message
    document: object  # the whole document as parsed, to name the entry a problem is in

    def find(self, loc: Location) -> object:
        """The document's value at ``loc``, or None when there is nothing there."""
        found = self.document
        for part in loc:
            if isinstance(found, Mapping) and isinstance(part, str):
                found = found.get(part)
            elif isinstance(found, Sequence) and not isinstance(found, str) and isinstance(part, int):
                found = found[part] if 0 <= part < len(found) else None
            else:
                return None
        return found


def first_problem(error: ValidationError, document: object) -> Problem:
    """The problem to report: an unknown field before all else (a misspelling explains the rest), by name."""
    errors = error.errors(include_url=False)
    unknown = sorted((e for e in errors if e["type"] == "extra_forbidden"), key=lambda e: str(e["loc"]))
    first = (unknown or errors)[0]
    context = first.get("ctx") or {}
    reason = str(context["error"]) if first["type"] == "value_error" and "error" in context else first["msg"]
    value = None if first["type"] == "missing" else first["input"]
    return Problem(tuple(first["loc"]), first["type"], value, reason, document)


def validated(
    adapter: TypeAdapter[T],
    document: object,
    explain: Callable[[Problem], str],
    failure: Callable[[str], Exception],
) -> T:
    """``document`` (already parsed JSON) as ``adapter``'s type, or ``failure(explain(first problem))``."""
    try:
        return adapter.validate_python(document)
    except ValidationError as error:
        raise failure(explain(first_problem(error, document))) from None
