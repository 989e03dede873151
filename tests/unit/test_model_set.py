"""The model set as a source (issue 10 part 3): the repository scan of old, or an explicit list replaced while serving.

Real local folders and the real repository backends; the fake runtime (tests/fakes.py) stands in for TensorFlow,
because the point here is the manager's lifecycle logic, and an injected clock drives back-off and deadlines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from apptools import wait_until
from fakes import FakeLoader, write_fake_version
from service.errors import Code
from service.manager import ModelManager
from service.manager.source import MODEL_CONFIG_LIST, REPOSITORY_SCAN, ModelSetError
from service.model_set import ModelSet, parse_model_set
from service.observability.metrics import Metrics
from service.repository.factory import split_base_path
from service.repository.local import LocalRepository
from service.settings import Settings
from service.states import VersionState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publish(tmp_path: Path, base: Path, version: int, offset: int | None = None, **markers: bool) -> None:
    """A fake version in ``base/<version>`` with its manifest, as `rtserve push` writes it into a model folder."""
    source = write_fake_version(tmp_path / "src" / f"{base.name}-{version}-{offset}", version, **markers)
    if offset is not None:  # tells two copies of one version number apart (y = x + offset)
        (source / "VERSION").write_text(str(offset))
    LocalRepository(base.parent).upload_version(base.name, version, source)


def entry(name: str, base: Path, policy: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "base_path": str(base), **fields}
    if policy is not None:
        document["model_version_policy"] = policy
    return document


def model_set(*entries: dict[str, Any]) -> ModelSet:
    return parse_model_set({"config": list(entries)})


def make_manager(
    tmp_path: Path, listed: ModelSet | None = None, clock: Clock | None = None, **overrides: Any
) -> tuple[ModelManager, FakeLoader, Metrics]:
    root = tmp_path / "repo"
    root.mkdir(exist_ok=True)
    settings = Settings(repository=str(root), cache_dir=str(tmp_path / "cache"), model_config_list=listed, **overrides)
    loader = FakeLoader()
    metrics = Metrics(CollectorRegistry())
    manager = ModelManager(
        settings, LocalRepository(root), loader, metrics, clock=clock or Clock(), after_load_change=lambda _: None
    )
    return manager, loader, metrics


def reloads(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("rtserve_model_config_reloads_total", {"outcome": outcome}) or 0.0


def state_series(metrics: Metrics, model: str, version: int, state: str) -> float | None:
    labels = {"model_name": model, "model_version": str(version), "state": state}
    return metrics.registry.get_sample_value("rtserve_model_version_state", labels)


def test_default_is_the_repository_scan_of_today(tmp_path: Path) -> None:
    manager, _, _ = make_manager(tmp_path)
    publish(tmp_path, tmp_path / "repo" / "m", 1)
    publish(tmp_path, tmp_path / "repo" / "m", 2)
    manager.poll_once()
    assert manager.model_set_status().source == REPOSITORY_SCAN
    assert manager.model_set_status().models == ("*",)
    assert sorted(manager.snapshot()["m"].available) == [2]
    assert manager.is_ready()


def test_listed_models_load_from_their_own_base_paths(tmp_path: Path) -> None:
    # Base folders named unlike their models, one holding TF Serving's zero-padded version folders.
    resnet, iris = tmp_path / "exports" / "resnet_v2", tmp_path / "elsewhere" / "iris-prod"
    publish(tmp_path, resnet, 123)
    (resnet / "123").rename(resnet / "00000123")
    publish(tmp_path, iris, 1)
    publish(tmp_path, iris, 2)
    listed = model_set(entry("resnet", resnet), entry("iris", iris, {"all": {}}))
    manager, loader, _ = make_manager(tmp_path, listed)
    publish(tmp_path, tmp_path / "repo" / "other", 1)  # the repository root is no longer scanned
    manager.poll_once()
    snapshot = manager.snapshot()
    assert sorted(snapshot) == ["iris", "resnet"]
    assert sorted(snapshot["resnet"].available) == [123]
    assert sorted(snapshot["iris"].available) == [1, 2]
    assert manager.is_ready()
    assert manager.model_set_status().source == MODEL_CONFIG_LIST
    assert loader.servable(123).offset == 123


def test_a_listed_model_counts_for_the_first_readiness(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    manager, _, _ = make_manager(tmp_path, model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b")))
    manager.poll_once()
    assert not manager.is_ready(), "b has no version yet"
    publish(tmp_path, tmp_path / "b", 1)
    manager.poll_once()
    assert manager.is_ready()


def test_an_empty_list_is_never_ready(tmp_path: Path) -> None:
    manager, _, _ = make_manager(tmp_path, model_set())
    manager.poll_once()
    assert not manager.is_ready()


def test_added_model_loads_and_counts_for_readiness_only_once_available(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 1, stuck=True)  # its warm-up waits for loader.release
    manager, loader, metrics = make_manager(tmp_path, model_set(entry("a", tmp_path / "a")))
    manager.poll_once()
    assert manager.is_ready()
    manager.apply_model_set(model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b")))
    manager.poll_once(wait=False)
    wait_until(
        lambda: "b" in manager.snapshot() and manager.snapshot()["b"].statuses[0].state == VersionState.LOADING, 10
    )
    assert manager.is_ready(), "a model added while serving must not take the replica out of its Service"
    assert not manager.snapshot()["b"].ready
    loader.release.set()
    wait_until(lambda: manager.snapshot()["b"].ready, 10, what="b AVAILABLE")
    assert manager.is_ready()
    assert reloads(metrics, "success") == 1.0
    assert manager.model_set_status().models == ("a", "b")
    assert manager.model_set_status().applied == 1


def serving_a_and_b(tmp_path: Path) -> tuple[ModelManager, Metrics, ModelSet]:
    """A manager serving models a and b (version 1 each) from a list; the list is returned too."""
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 1)
    both = model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b"))
    manager, _, metrics = make_manager(tmp_path, both)
    manager.poll_once()
    return manager, metrics, both


def test_dropped_model_unloads_once_its_leases_return_and_its_series_go(tmp_path: Path) -> None:
    manager, metrics, _ = serving_a_and_b(tmp_path)
    leased = manager.snapshot()["b"].available[1]
    assert leased.acquire()
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    assert "b" not in manager.snapshot(), "new requests no longer find a dropped model"
    assert manager.is_ready()
    servable = leased.servable
    assert not servable.closed  # type: ignore[attr-defined]
    leased.release()
    wait_until(lambda: servable.closed, 10, what="b's version closed")  # type: ignore[attr-defined]
    wait_until(lambda: state_series(metrics, "b", 1, VersionState.END) is None, 10, what="b's state series removed")
    assert state_series(metrics, "a", 1, VersionState.AVAILABLE) == 1.0
    assert not (tmp_path / "cache" / "b").exists() or not any((tmp_path / "cache" / "b").iterdir())
    manager.poll_once()
    assert sorted(manager.snapshot()) == ["a"]


def test_dropped_then_added_again_counts_for_readiness_only_once_loaded(tmp_path: Path) -> None:
    manager, metrics, both = serving_a_and_b(tmp_path)
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    wait_until(lambda: state_series(metrics, "b", 1, VersionState.END) is None, 10, what="b forgotten")
    manager.apply_model_set(both)
    assert "b" not in manager.snapshot()
    assert manager.is_ready(), "b comes back: it counts again once loaded"
    manager.poll_once()
    assert manager.snapshot()["b"].ready
    assert manager.is_ready()


def test_kept_model_keeps_serving_without_a_reload(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 1)
    manager, loader, _ = make_manager(tmp_path, model_set(entry("a", tmp_path / "a")))
    manager.poll_once()
    serving = manager.snapshot()["a"].available[1]
    manager.apply_model_set(model_set(entry("b", tmp_path / "b"), entry("a", str(tmp_path / "a") + "/")))
    manager.poll_once()
    assert manager.snapshot()["a"].available[1] is serving
    assert loader.calls == 2  # a once, b once


def test_switching_from_the_scan_to_a_list_keeps_a_model_at_the_same_place(tmp_path: Path) -> None:
    manager, loader, _ = make_manager(tmp_path)
    publish(tmp_path, tmp_path / "repo" / "m", 1)
    manager.poll_once()
    serving = manager.snapshot()["m"].available[1]
    manager.apply_model_set(model_set(entry("m", tmp_path / "repo" / "m")))
    manager.poll_once()
    assert manager.snapshot()["m"].available[1] is serving
    assert loader.calls == 1


def test_changed_base_path_reloads_while_the_old_copy_serves(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "old" / "m", 1)
    publish(tmp_path, tmp_path / "new" / "m", 1, offset=7)
    publish(tmp_path, tmp_path / "new" / "m", 2, offset=8, broken=True)
    manager, loader, _ = make_manager(tmp_path, model_set(entry("m", tmp_path / "old" / "m", {"all": {}})))
    manager.poll_once()
    old = manager.snapshot()["m"].available[1]
    manager.apply_model_set(model_set(entry("m", tmp_path / "new" / "m", {"all": {}})))
    assert manager.snapshot()["m"].available[1] is old, "until the new place is listed, the old copy serves"
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert model.available[1].servable.offset == 7  # type: ignore[attr-defined]
    assert old.servable.closed  # type: ignore[attr-defined]
    failed = next(status for status in model.statuses if status.version == 2)
    assert failed.error_code == Code.UNKNOWN  # the broken version of the new place is reported, never served
    assert sorted(model.available) == [1]
    assert loader.calls == 3


def test_a_failed_reload_from_the_new_base_path_keeps_the_old_copy(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "old" / "m", 1)
    publish(tmp_path, tmp_path / "new" / "m", 1, broken=True)
    manager, _, _ = make_manager(tmp_path, model_set(entry("m", tmp_path / "old" / "m")))
    manager.poll_once()
    old = manager.snapshot()["m"].available[1]
    manager.apply_model_set(model_set(entry("m", tmp_path / "new" / "m")))
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert model.available[1] is old
    assert (model.statuses[0].state, model.statuses[0].error_code) == (VersionState.AVAILABLE, Code.UNKNOWN)
    assert manager.is_ready()


def test_changed_policy_loads_and_unloads_without_reloading_what_stays(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        publish(tmp_path, tmp_path / "m", version)
    manager, loader, _ = make_manager(tmp_path, model_set(entry("m", tmp_path / "m")))
    manager.poll_once()
    newest = manager.snapshot()["m"].available[3]
    manager.apply_model_set(model_set(entry("m", tmp_path / "m", {"latest": {"num_versions": 2}})), wait=True)
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [2, 3]
    assert manager.snapshot()["m"].available[3] is newest
    manager.apply_model_set(model_set(entry("m", tmp_path / "m", {"specific": {"versions": ["1"]}})), wait=True)
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1]
    assert loader.calls == 3


def one(**fields: Any) -> dict[str, Any]:
    """A list of one model "a" at base path A, with ``fields`` set (or replaced)."""
    return {"config": [{"name": "a", "base_path": "A", **fields}]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"config": [{"name": "a", "base_path": "A"}, {"name": "a", "base_path": "B"}]}, "listed more than once"),
        (one(name="../a"), "invalid model name"),
        (one(model_version_policy={"latest": {"num_versions": 0}}), "greater than or equal to 1"),
        (one(model_version_policy={"latest": {}, "all": {}}), "choose one"),
        (one(model_version_policy={"newest": {}}), "newest"),
        (one(model_platform="pytorch"), "model_platform"),
        (one(version_labels={"1": 1}), "not a valid label"),
        (one(version_labels={"x": 0}), "invalid version"),
        (one(base_path="s3://bucket"), "names no folder"),
        (one(base_path="MISSING"), "cannot open base path"),
        (one(version_labels={"stable": 2}), "not AVAILABLE"),
    ],
)
def test_a_list_that_cannot_be_applied_leaves_the_current_one_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, document: dict[str, Any], message: str
) -> None:
    publish(tmp_path, tmp_path / "A", 1)
    publish(tmp_path, tmp_path / "B", 1)
    manager, _, metrics = make_manager(tmp_path, model_set(entry("a", tmp_path / "A")))
    manager.poll_once()
    for model in document["config"]:
        model["base_path"] = model["base_path"].replace("A", str(tmp_path / "A")).replace("B", str(tmp_path / "B"))
        model["base_path"] = model["base_path"].replace("MISSING", str(tmp_path / "missing"))
    with caplog.at_level(logging.ERROR), pytest.raises(ModelSetError, match=message):
        manager.apply_model_set(document)
    status = manager.model_set_status()
    assert message in status.error_message
    assert status.error_code != Code.OK
    assert status.models == ("a",)
    assert reloads(metrics, "failure") == 1.0
    assert message in caplog.text
    manager.poll_once()
    assert sorted(manager.snapshot()) == ["a"]
    assert manager.snapshot()["a"].available[1] is not None
    assert manager.is_ready()


def test_a_good_list_after_a_refused_one_clears_the_error(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    manager, _, _ = make_manager(tmp_path, model_set(entry("a", tmp_path / "a")))
    with pytest.raises(ModelSetError):
        manager.apply_model_set({"config": [{"name": "a"}]})
    assert manager.model_set_status().error_code == Code.INVALID_ARGUMENT
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    assert manager.model_set_status().error_message == ""


def test_labels_of_the_list_route_like_serving_json_and_win_over_it(tmp_path: Path) -> None:
    base = tmp_path / "m"
    for version in (1, 2, 3):
        publish(tmp_path, base, version)
    LocalRepository(tmp_path).write_model_file("m", "serving.json", b'{"labels": {"stable": 1, "old": 1}}')
    listed = model_set(entry("m", base, version_labels={"stable": 2}))
    manager, _, _ = make_manager(tmp_path, listed)
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert dict(model.labels) == {"stable": 2, "old": 1}
    assert sorted(model.available) == [1, 2, 3], "every labelled version loads, whatever the policy"


def test_relabelling_a_kept_model_follows_tf_servings_availability_rule(tmp_path: Path) -> None:
    base = tmp_path / "m"
    for version in (1, 2):
        publish(tmp_path, base, version)
    manager, _, _ = make_manager(tmp_path, model_set(entry("m", base, {"all": {}}, version_labels={"stable": 1})))
    manager.poll_once()
    manager.apply_model_set(model_set(entry("m", base, {"all": {}}, version_labels={"stable": 2})))
    assert dict(manager.snapshot()["m"].labels) == {"stable": 2}
    # Version 3 is not AVAILABLE: refused, whether the label is new or moved.
    for labels in ({"stable": 2, "canary": 3}, {"stable": 3}):
        with pytest.raises(ModelSetError, match="not AVAILABLE") as refused:
            manager.apply_model_set(model_set(entry("m", base, {"all": {}}, version_labels=labels)))
        assert refused.value.code == Code.FAILED_PRECONDITION
    assert dict(manager.snapshot()["m"].labels) == {"stable": 2}


def test_allowing_labels_for_unavailable_versions_admits_only_new_labels(tmp_path: Path) -> None:
    base = tmp_path / "m"
    publish(tmp_path, base, 1)
    listed = model_set(entry("m", base, version_labels={"stable": 1}))
    manager, _, _ = make_manager(tmp_path, listed, allow_version_labels_for_unavailable_models=True)
    manager.poll_once()
    manager.apply_model_set(model_set(entry("m", base, version_labels={"stable": 1, "canary": 2})))
    assert dict(manager.snapshot()["m"].labels) == {"stable": 1, "canary": 2}
    with pytest.raises(ModelSetError, match="label 'stable' names version 2"):
        manager.apply_model_set(model_set(entry("m", base, version_labels={"stable": 2})))
    publish(tmp_path, base, 2)
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1, 2], "the labelled version loads once published"


def test_the_model_set_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    document = '{"config": [{"name": "iris", "base_path": "s3://models/iris", "version_labels": {"stable": "3"}}]}'
    monkeypatch.setenv("RTSERVE_MODEL_CONFIG_LIST", document)
    settings = Settings()
    assert settings.model_config_list is not None
    (iris,) = settings.model_config_list.config
    assert (iris.name, iris.base_path, str(iris.policy), iris.version_labels) == (
        "iris",
        "s3://models/iris",
        "latest:1",
        {"stable": 3},
    )


def test_a_version_deleted_from_the_repository_unloads_once_an_older_one_serves(tmp_path: Path) -> None:
    # The rule a policy change needs (specific:1 unloads 3): the newest AVAILABLE version is not pinned unless a
    # serving.json switch is pending. Before, a rolled-back (deleted) newest version kept serving as the default.
    model = tmp_path / "repo" / "m"
    manager, _, _ = make_manager(tmp_path)
    publish(tmp_path, model, 1)
    publish(tmp_path, model, 2)
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [2]
    for path in sorted((model / "2").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (model / "2").rmdir()
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1]
    assert manager.snapshot()["m"].default_version == 1


def test_dropping_a_model_with_nothing_loaded_forgets_it_at_once(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 1, broken=True)
    manager, _, metrics = make_manager(tmp_path, model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b")))
    manager.poll_once()
    assert state_series(metrics, "b", 1, VersionState.END) == 1.0
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    assert "b" not in manager.snapshot()
    assert state_series(metrics, "b", 1, VersionState.END) is None
    assert manager.is_ready(), "a listed model that never loaded no longer holds readiness once dropped"


@pytest.mark.parametrize(
    ("base_path", "parent", "folder"),
    [
        ("s3://bucket/team/iris", "s3://bucket/team", "iris"),
        ("s3://bucket/iris/", "s3://bucket", "iris"),
        ("/mnt/exports/resnet_v2", "/mnt/exports", "resnet_v2"),
        ("file:///mnt/exports/resnet_v2/", "/mnt/exports", "resnet_v2"),
    ],
)
def test_a_base_path_opens_as_a_view_of_its_parent(base_path: str, parent: str, folder: str) -> None:
    assert split_base_path(base_path) == (parent, folder)


@pytest.mark.parametrize("base_path", ["s3://bucket", "s3:///iris", "/", "", "/mnt/my model", "s3://b/x/.."])
def test_a_base_path_without_a_plain_last_folder_is_refused(base_path: str) -> None:
    with pytest.raises(ValueError, match="base path"):
        split_base_path(base_path)


def test_a_load_in_flight_when_the_base_path_moves_is_reloaded_from_the_new_place(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "old" / "m", 1, stuck=True)  # its warm-up waits for loader.release
    publish(tmp_path, tmp_path / "new" / "m", 1, offset=7)
    manager, loader, _ = make_manager(tmp_path, model_set(entry("m", tmp_path / "old" / "m")))
    manager.poll_once(wait=False)
    wait_until(lambda: loader.calls == 1, 10, what="the old place's load to start")
    manager.apply_model_set(model_set(entry("m", tmp_path / "new" / "m")))
    loader.release.set()
    wait_until(lambda: manager.snapshot()["m"].ready, 10, what="the old place's copy to serve")
    manager.poll_once()
    assert manager.snapshot()["m"].available[1].servable.offset == 7  # type: ignore[attr-defined]
    assert loader.servable(1).closed


def test_a_dropped_model_loading_is_never_installed_and_goes(tmp_path: Path) -> None:
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 2, stuck=True)
    manager, loader, metrics = make_manager(tmp_path, model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b")))
    manager.poll_once(wait=False)
    wait_until(lambda: loader.calls == 2, 10, what="both loads to start")
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    loader.release.set()
    wait_until(lambda: state_series(metrics, "b", 2, VersionState.LOADING) is None, 10, what="b forgotten")
    assert loader.servable(2).closed
    assert "b" not in manager.snapshot()
    assert manager.is_ready()


def test_the_model_set_reads_protobufs_json_spelling_too() -> None:
    # What google.protobuf.json_format prints for a ModelConfigList (int64 as strings, lowerCamelCase names).
    printed = {
        "config": [
            {
                "name": "iris",
                "basePath": "/models/iris",
                "modelPlatform": "tensorflow",
                "modelVersionPolicy": {"specific": {"versions": ["1", "2"]}},
                "versionLabels": {"stable": "2"},
            }
        ]
    }
    (iris,) = parse_model_set(printed).config
    assert (iris.base_path, str(iris.policy), iris.version_labels) == ("/models/iris", "specific:1,2", {"stable": 2})
    with pytest.raises(ValueError, match=r"config\.0\.model_version_policy\.latest\.num_versions"):
        parse_model_set(
            {"config": [{"name": "a", "base_path": "/a", "modelVersionPolicy": {"latest": {"numVersions": 0}}}]}
        )


def test_a_dropped_model_whose_load_was_abandoned_goes_when_the_load_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    publish(tmp_path, tmp_path / "a", 1)
    publish(tmp_path, tmp_path / "b", 1, stuck=True)  # cannot be aborted: only loader.release ends its warm-up
    listed = model_set(entry("a", tmp_path / "a"), entry("b", tmp_path / "b"))
    manager, loader, metrics = make_manager(tmp_path, listed, clock, load_timeout_s=5.0)
    manager.poll_once(wait=False)
    wait_until(lambda: any(s.stuck and s.warming.is_set() for s in loader.loaded), 10, what="b warming up")
    # Before the clock jumps past the load deadline: else a's load, if still running, is abandoned too (a race).
    wait_until(lambda: state_series(metrics, "a", 1, VersionState.AVAILABLE) == 1.0, 10, what="a AVAILABLE")
    manager.apply_model_set(model_set(entry("a", tmp_path / "a")))
    clock.now += 6
    manager.check_deadlines()
    assert metrics.registry.get_sample_value("rtserve_model_loads_abandoned") == 1.0
    loader.release.set()
    wait_until(lambda: metrics.registry.get_sample_value("rtserve_model_loads_abandoned") == 0.0, 10)
    wait_until(lambda: state_series(metrics, "b", 1, VersionState.END) is None, 10, what="b forgotten")
    assert "unexpected error" not in caplog.text
    assert [s.closed for s in loader.loaded if s.stuck] == [True]
