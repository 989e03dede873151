"""What a test needs from outside the repository: a skip with the reason on a user's machine, a failure in CI.

A fresh clone has no ``../shared`` folder (the protocol specs, the CRD schemas) and may lack the tools `make tools`
installs. Skipping then is right for a user; in CI (``CI=true``, where `.ci/run` provides everything) the same
skip would hide a test that silently stopped running, so it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = (REPO_ROOT.parent / "shared").resolve()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str, fix: str) -> NoReturn:
    """A prerequisite is missing: a failure in CI, a skip (with ``reason`` and ``fix``) elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: {fix} before the tests)", pytrace=False)
    pytest.skip(f"{reason}; {fix}")


def shared_path(relative: str) -> Path:
    """``../shared/<relative>`` (a file or a folder), or the skip / CI failure that says it is absent."""
    path = SHARED / relative
    if not path.exists():
        unavailable(f"{path} is absent (../shared is not beside the repository)", f"put the shared folder at {SHARED}")
    return path
