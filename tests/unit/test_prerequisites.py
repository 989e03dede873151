"""A missing ../shared file skips the test on a user's machine and fails it under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

import prerequisites
from prerequisites import shared_path


@pytest.fixture
def empty_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ../shared folder that holds nothing."""
    monkeypatch.setattr(prerequisites, "SHARED", tmp_path)
    return tmp_path


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_shared_file_skips_with_its_path_off_ci(
    empty_shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_path("specs/absent.yaml")
    assert str(empty_shared / "specs" / "absent.yaml") in str(skipped.value)
    assert "../shared is not beside the repository" in str(skipped.value)


def test_a_missing_shared_file_skips_when_ci_is_unset(empty_shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        shared_path("specs/absent.yaml")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_a_missing_shared_file_fails_under_ci(empty_shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        shared_path("specs/absent.yaml")
    assert str(empty_shared / "specs" / "absent.yaml") in str(failed.value)
    assert "CI=true" in str(failed.value)


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_present_shared_file_or_folder_is_returned(
    empty_shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    (empty_shared / "schemas" / "crds").mkdir(parents=True)
    (empty_shared / "specs").mkdir()
    (empty_shared / "specs" / "spec.yaml").write_text("openapi: 3.0.0\n")
    assert shared_path("specs/spec.yaml") == empty_shared / "specs" / "spec.yaml"
    assert shared_path("schemas/crds") == empty_shared / "schemas" / "crds"
