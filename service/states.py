"""A model version's states, TF Serving's: defined once for the manager, metrics, status answers and fleet status.

A leaf (like names.py): the values are the names themselves, so a state compares equal to its name in JSON, in
a metric label and in ``state == "AVAILABLE"``; ``number`` is TF Serving's ModelVersionStatus.State, which the
gRPC status answer carries.
"""

from __future__ import annotations

import enum

# ModelVersionStatus.State's zero: a version whose state is not known. rtserve never reports it for a version it
# knows; a front end answers it only where the wire needs a number for "no state".
UNKNOWN_NUMBER = 0


class VersionState(enum.StrEnum):
    """START (known, not loading yet), LOADING, AVAILABLE (serving), UNLOADING, END (unloaded or failed)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"

    @property
    def number(self) -> int:
        """TF Serving's number for the state (tensorflow.serving.ModelVersionStatus.State)."""
        return _NUMBERS[self]


_NUMBERS = {
    VersionState.START: 10,
    VersionState.LOADING: 20,
    VersionState.AVAILABLE: 30,
    VersionState.UNLOADING: 40,
    VersionState.END: 50,
}
