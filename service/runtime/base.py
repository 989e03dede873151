"""The interface between the model manager and a runtime."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from service.tensors import SignatureSpec


class Servable(Protocol):
    """One loaded model version. ``run`` is called only from the version's inference thread (its batcher)."""

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]: ...

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature on validated inputs (names, dtypes and shapes already checked)."""
        ...

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run every signature once per batch size so the first real request pays no tracing cost."""
        ...

    def close(self) -> None:
        """Drop every reference to the model so its memory can be given back."""
        ...


class Loader(Protocol):
    """Turns a downloaded version folder into a servable; raises ModelLoadError with a clear message."""

    def __call__(self, path: Path) -> Servable: ...


@runtime_checkable
class Abortable(Protocol):
    """A servable whose load-time work can be cancelled from another thread (the manager's load watchdog)."""

    def abortable(self) -> AbstractContextManager[None]:
        """A scope in which what this thread runs on the model stops early once ``abort`` is called."""
        ...

    def abort(self) -> None:
        """Cancel the work running in ``abortable`` scopes, now and later; the servable is then unusable."""
        ...


def abortable_scope(servable: Servable) -> AbstractContextManager[None]:
    return servable.abortable() if isinstance(servable, Abortable) else nullcontext()


def abort(servable: Servable) -> None:
    if isinstance(servable, Abortable):
        servable.abort()
