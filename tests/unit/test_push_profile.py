"""`rtserve push --profile DATA`: the reference profile travels inside the version, listed in its manifest."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.errors import InvalidArgument
from service.observability.profile import PROFILE_PATH, read_profile
from service.repository.local import LocalRepository
from service.repository.manifest import read_manifest, verify_folder
from service.tools.push import push_version


def training_csv(path: Path, rows: int = 60) -> Path:
    data = np.random.default_rng(0).normal(5, 1, size=(rows, 4))
    path.write_text("\n".join(",".join(f"{v:.2f}" for v in row) for row in data) + "\n")
    return path


def test_push_writes_the_profile_into_the_version_and_its_manifest(demo_model_dir: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(demo_model_dir) for p in demo_model_dir.rglob("*"))
    repository = LocalRepository(tmp_path / "repo")
    version = push_version(repository, demo_model_dir, "iris", profile_data=training_csv(tmp_path / "t.csv"))
    folder = tmp_path / "repo" / "iris" / str(version)
    manifest = read_manifest(folder)
    assert PROFILE_PATH in manifest.sizes()
    verify_folder(folder, manifest)  # every file, the profile included, matches its sha256
    profile = read_profile(folder)
    assert profile is not None and profile.samples == 60
    assert [f.name for f in profile.features] == [f"features[{i}]" for i in range(4)]
    assert sorted(p.relative_to(demo_model_dir) for p in demo_model_dir.rglob("*")) == before
    assert not any(path.is_symlink() for path in folder.rglob("*"))


def test_push_refuses_data_that_does_not_fit_and_publishes_nothing(demo_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "three.csv"
    data.write_text("1,2,3\n" * 30)
    repository = LocalRepository(tmp_path / "repo")
    with pytest.raises(InvalidArgument, match=r"expected \[rows, 4\]"):
        push_version(repository, demo_model_dir, "iris", profile_data=data)
    assert not (tmp_path / "repo" / "iris").exists()


@pytest.fixture
def root_logging() -> Iterator[None]:
    """main() configures the root logger; put it back so that later tests do not log into this test's capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_cli_push_with_profile(demo_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = training_csv(tmp_path / "t.csv")
    repo = tmp_path / "repo"
    argv = ["push", str(demo_model_dir), "--model", "iris", "--repository", str(repo), "--profile", str(data)]
    assert main([*argv, "--profile-bins", "4"]) == 0
    assert "published iris version 1" in capsys.readouterr().out
    document = json.loads((repo / "iris" / "1" / PROFILE_PATH).read_text())
    assert all(len(feature["proportions"]) <= 4 for feature in document["features"])
    assert main(["push", str(demo_model_dir), "--model", "iris", "--repository", str(repo), "--profile", "x.txt"]) == 1
    assert "must be a .npy, .npz or .csv file" in capsys.readouterr().err
