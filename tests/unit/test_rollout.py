"""`rtserve rollout`: the serving.json it writes, on a real local repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import write_fake_version
from service.cli import main
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.manager.routing import ServingConfig, parse_serving_config
from service.repository.local import LocalRepository
from service.tools.rollout import RolloutRequest, rollout

NOW = 1_764_072_000.0


@pytest.fixture
def repository(tmp_path: Path) -> LocalRepository:
    repo = LocalRepository(tmp_path / "repo")
    for version in (1, 2, 3):
        repo.upload_version("m", version, write_fake_version(tmp_path / f"v{version}", version))
    return repo


def serving(repository: LocalRepository) -> ServingConfig:
    data = repository.read_model_file("m", "serving.json")
    assert data is not None
    return parse_serving_config(data)


def test_immediate_rollout_keeps_labels(repository: LocalRepository) -> None:
    repository.write_model_file("m", "serving.json", b'{"default": 1, "labels": {"canary": 3}, "canary_weight": 0.1}')
    done = rollout(repository, RolloutRequest("m", 2), NOW)
    assert done.before == ServingConfig(1, {"canary": 3}, 0.1)
    assert serving(repository) == ServingConfig(2, {"canary": 3}, 0.1)


def test_timed_rollout_records_what_serves_until_then(repository: LocalRepository) -> None:
    repository.write_model_file("m", "serving.json", b'{"default": 1}')
    rollout(repository, RolloutRequest("m", 2, activate_at=NOW + 60), NOW)
    assert serving(repository) == ServingConfig(2, {}, 0.0, NOW + 60, previous_default=1)
    # A second rollout before the first took effect starts from what still serves: version 1.
    rollout(repository, RolloutRequest("m", 3, activate_at=NOW + 120), NOW + 1)
    assert serving(repository).previous_default == 1


def test_without_a_file_the_newest_version_is_what_serves(repository: LocalRepository) -> None:
    rollout(repository, RolloutRequest("m", 2, activate_at=NOW + 60), NOW)
    assert serving(repository).previous_default == 3


def test_moving_the_default_label(repository: LocalRepository) -> None:
    repository.write_model_file("m", "serving.json", b'{"default": "stable", "labels": {"stable": 1}}')
    rollout(repository, RolloutRequest("m", 2, label="stable", activate_at=NOW + 60), NOW)
    assert serving(repository) == ServingConfig("stable", {"stable": 2}, 0.0, NOW + 60, previous_default=1)
    rollout(repository, RolloutRequest("m", 3, label="canary", canary_weight=0.05), NOW)
    assert serving(repository).labels == {"stable": 2, "canary": 3}
    assert serving(repository).activate_at == NOW + 60  # a label of its own leaves the pending switch alone


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (RolloutRequest("m", 9), NotFound, "m version 9 is not in"),
        (RolloutRequest("m", 2, activate_at=NOW - 1), InvalidArgument, "has passed"),
        (RolloutRequest("m", 2, label="canary", activate_at=NOW + 9), InvalidArgument, "is not the default"),
        (RolloutRequest("m", 2, canary_weight=0.5), InvalidArgument, "needs a 'canary' label"),
    ],
)
def test_refusals_name_the_problem(
    repository: LocalRepository, request_: RolloutRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        rollout(repository, request_, NOW)
    assert repository.read_model_file("m", "serving.json") is None  # nothing written


def test_an_invalid_file_is_not_overwritten(repository: LocalRepository) -> None:
    repository.write_model_file("m", "serving.json", b'{"default": "nope"}')
    with pytest.raises(FailedPrecondition, match="invalid"):
        rollout(repository, RolloutRequest("m", 2), NOW)


def test_cli_rollout_in_seconds(repository: LocalRepository, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "m", "--version", "2", "--in", "30", "--repository", str(repository.root)]) == 0
    out = capsys.readouterr().out
    assert "default requests go to version 3 until" in out
    assert '"previous_default": 3' in out
    config = serving(repository)
    assert config.target() == 2
    assert config.activate_at is not None
    assert main(["rollout", "m", "--version", "2", "--at", "2026-01-01T00:00:00", "--repository", "x"]) == 1
    assert "has no time zone" in capsys.readouterr().err
