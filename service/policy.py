"""TF Serving's version policies: which of a model's complete versions to serve."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` N newest versions, or ``all``, or a ``specific`` set."""

    kind: str
    latest: int = 1
    specific: frozenset[int] = frozenset()

    def select(self, versions: Iterable[int]) -> set[int]:
        ordered = sorted(set(versions), reverse=True)
        if self.kind == "all":
            return set(ordered)
        if self.kind == "specific":
            return {v for v in ordered if v in self.specific}
        return set(ordered[: self.latest])

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.latest}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in sorted(self.specific))
        return "all"


def parse_version_policy(text: str) -> VersionPolicy:
    """Parse 'latest', 'latest:N', 'all' or 'specific:1,2'; ValueError says what is wrong."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "all" and not arg:
        return VersionPolicy("all")
    if kind == "latest":
        count = int(arg) if arg.strip() else 1
        if count < 1:
            raise ValueError(f"version policy {text!r}: latest needs N >= 1")
        return VersionPolicy("latest", latest=count)
    if kind == "specific":
        try:
            chosen = frozenset(int(v) for v in arg.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"version policy {text!r}: specific takes version numbers") from None
        if not chosen:
            raise ValueError(f"version policy {text!r}: specific needs at least one version")
        return VersionPolicy("specific", specific=chosen)
    raise ValueError(f"version policy {text!r}: expected 'latest:N', 'all' or 'specific:1,2'")
