"""The model manager's lifecycle rules, on a real local repository with a fake runtime (no TensorFlow)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from fakes import SIGNATURE, FakeLoader, write_fake_version
from service.errors import Code, RepositoryError, Unavailable
from service.manager import AVAILABLE, END, ModelManager
from service.metrics import Metrics
from service.repository.local import LocalRepository
from service.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def make_manager(
    tmp_path: Path, repo_root: Path, clock: Clock | None = None, **overrides: object
) -> tuple[ModelManager, FakeLoader, Metrics]:
    settings = Settings(repository=str(repo_root), cache_dir=str(tmp_path / "cache"), **overrides)  # type: ignore[arg-type]
    loader = FakeLoader()
    metrics = Metrics(CollectorRegistry())
    # The heap is settled on real runs (tests/unit/test_heap.py); here it would only slow every poll down.
    manager = ModelManager(
        settings, LocalRepository(repo_root), loader, metrics, clock=clock or Clock(), after_load_change=lambda: None
    )
    return manager, loader, metrics


def push(repo_root: Path, tmp_path: Path, model: str, version: int, broken: bool = False) -> None:
    source = write_fake_version(tmp_path / "src" / f"{model}-{version}", version, broken)
    LocalRepository(repo_root).upload_version(model, version, source)


def test_loads_latest_version_and_reports_available(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    push(repo_root, tmp_path, "m", 2)
    manager, loader, metrics = make_manager(tmp_path, repo_root)
    assert not manager.is_ready()
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [2]
    assert model.default_version == 2
    assert manager.is_ready()
    assert loader.loaded[0].warmed == (1, 2, 4, 8, 16, 32, 64, 128, 256)  # every batch size up to the default max
    assert (
        metrics.registry.get_sample_value(
            "rtserve_model_version_state", {"model_name": "m", "model_version": "2", "state": AVAILABLE}
        )
        == 1.0
    )


def test_new_version_replaces_old_only_after_it_is_available(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    manager, loader, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    first = loader.loaded[0]
    push(repo_root, tmp_path, "m", 2)
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [2]
    assert first.closed
    states = {s.version: s.state for s in model.statuses}
    assert states == {2: AVAILABLE, 1: END}


def test_corrupt_version_never_replaces_serving_one_and_is_retried_with_backoff(
    tmp_path: Path, repo_root: Path
) -> None:
    clock = Clock()
    push(repo_root, tmp_path, "m", 2)
    manager, loader, metrics = make_manager(tmp_path, repo_root, clock, load_retry_initial_s=10.0)
    manager.poll_once()
    push(repo_root, tmp_path, "m", 3, broken=True)
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [2]
    assert model.default_version == 2
    failed = next(s for s in model.statuses if s.version == 3)
    assert failed.state == END
    assert failed.error_code == Code.UNKNOWN
    assert "corrupt" in failed.error_message
    assert (
        metrics.registry.get_sample_value(
            "rtserve_model_loads_total", {"model_name": "m", "model_version": "3", "outcome": "failure"}
        )
        == 1.0
    )
    calls = loader.calls
    manager.poll_once()  # inside the back-off window: no new attempt
    assert loader.calls == calls
    clock.now += 11
    manager.poll_once()  # after it: one more attempt, still failing, still serving 2
    assert loader.calls == calls + 1
    assert sorted(manager.snapshot()["m"].available) == [2]
    assert manager.is_ready()


def test_version_without_manifest_loads_only_once_listing_is_stable(tmp_path: Path, repo_root: Path) -> None:
    # Written by another tool: no MANIFEST.json, so the listing must repeat across two polls.
    write_fake_version(repo_root / "m" / "1", 1)
    manager, loader, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    assert loader.calls == 0
    assert not manager.is_ready()
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1]


def test_policy_all_and_specific(tmp_path: Path, repo_root: Path) -> None:
    for version in (1, 2, 3):
        push(repo_root, tmp_path, "m", version)
    push(repo_root, tmp_path, "n", 1)
    push(repo_root, tmp_path, "n", 2)
    manager, _, _ = make_manager(tmp_path, repo_root, version_policy="all", version_policies={"n": "specific:1"})
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1, 2, 3]
    assert sorted(manager.snapshot()["n"].available) == [1]


def test_explicit_models_readiness_needs_every_model(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    manager, _, _ = make_manager(tmp_path, repo_root, models=["m", "missing"])
    manager.poll_once()
    assert "m" in manager.snapshot()
    assert not manager.is_ready()


def test_zero_models_is_not_ready(tmp_path: Path, repo_root: Path) -> None:
    manager, _, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    assert not manager.is_ready()


def test_serving_json_sets_default_and_labels(tmp_path: Path, repo_root: Path) -> None:
    for version in (1, 2):
        push(repo_root, tmp_path, "m", version)
    repo = LocalRepository(repo_root)
    repo.write_model_file("m", "serving.json", b'{"default": "stable", "labels": {"stable": 1, "canary": 2}}')
    manager, _, metrics = make_manager(tmp_path, repo_root, version_policy="all")
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert model.default_version == 1
    assert dict(model.labels) == {"stable": 1, "canary": 2}
    assert metrics.registry.get_sample_value("rtserve_model_default_version", {"model_name": "m"}) == 1.0
    # A broken edit keeps the last good routing.
    repo.write_model_file("m", "serving.json", b'{"default": "nope"')
    manager.poll_once()
    assert manager.snapshot()["m"].default_version == 1


def test_unload_waits_for_leased_requests(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    manager, loader, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    old = manager.snapshot()["m"].available[1]
    assert old.acquire()
    push(repo_root, tmp_path, "m", 2)
    poller = threading.Thread(target=manager.poll_once)
    poller.start()
    poller.join(0.3)
    assert poller.is_alive(), "unload must wait while a request holds the old version"
    assert not loader.loaded[0].closed
    assert sorted(manager.snapshot()["m"].available) == [2]  # new requests already go to 2
    assert not old.acquire()  # and cannot lease the retiring version any more
    old.release()
    poller.join(5)
    assert not poller.is_alive()
    assert loader.loaded[0].closed


def test_repository_outage_keeps_serving(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    manager, _, metrics = make_manager(tmp_path, repo_root)
    manager.poll_once()
    moved = repo_root.with_name("gone")
    repo_root.rename(moved)  # the whole repository vanishes
    with pytest.raises(RepositoryError):
        manager.poll_once()
    assert metrics.registry.get_sample_value("rtserve_repository_poll_errors_total") == 1.0
    assert manager.is_ready()
    assert sorted(manager.snapshot()["m"].available) == [1]


def test_each_version_batches_with_its_model_settings(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    push(repo_root, tmp_path, "plain", 1)
    batching = {"max_batch_size": 6, "overrides": {"plain": {"enabled": False}}}
    manager, loader, _ = make_manager(tmp_path, repo_root, models=["m", "plain"], batching=batching)
    manager.poll_once()
    by_model = {name: model.available[1] for name, model in manager.snapshot().items()}
    assert [s.warmed for s in loader.loaded] == [(1, 2, 4, 6), (1,)]  # loaded in the order of `models`
    outputs = asyncio.run(by_model["m"].batcher.submit(SIGNATURE, {"x": np.array([[1.0]], np.float32)}))
    assert outputs["y"].tolist() == [[2.0]]


def test_unload_closes_the_batcher_and_the_servable(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    manager, loader, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    old = manager.snapshot()["m"].available[1]
    push(repo_root, tmp_path, "m", 2)
    manager.poll_once()
    assert loader.loaded[0].closed
    with pytest.raises(Unavailable, match="being unloaded"):
        asyncio.run(old.batcher.submit(SIGNATURE, {"x": np.array([[1.0]], np.float32)}))
    manager.stop()
    assert loader.loaded[1].closed


# -- serving.json rollouts: activate_at, pending defaults, canary ---------------------------------------------

NOON = 1_764_072_000.0  # 2025-11-25T12:00:00Z


class WallClock(Clock):
    def __init__(self) -> None:
        self.now = NOON - 60


def rollout_manager(
    tmp_path: Path, repo_root: Path, wall: WallClock, **overrides: object
) -> tuple[ModelManager, FakeLoader, Metrics]:
    settings = Settings(repository=str(repo_root), cache_dir=str(tmp_path / "cache"), **overrides)  # type: ignore[arg-type]
    loader = FakeLoader()
    metrics = Metrics(CollectorRegistry())
    manager = ModelManager(settings, LocalRepository(repo_root), loader, metrics, clock=Clock(), wall_clock=wall)
    return manager, loader, metrics


def write_serving(repo_root: Path, document: str) -> None:
    LocalRepository(repo_root).write_model_file("m", "serving.json", document.encode())


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model_name": "m"})


ACTIVATION = '{"default": 2, "activate_at": "2025-11-25T12:00:00Z", "previous_default": 1}'


def test_versions_named_by_serving_json_load_whatever_the_policy(tmp_path: Path, repo_root: Path) -> None:
    wall = WallClock()
    for version in (1, 2, 3):
        push(repo_root, tmp_path, "m", version)
    write_serving(repo_root, '{"default": 1, "labels": {"canary": 2}}')
    manager, _, _ = rollout_manager(tmp_path, repo_root, wall)  # latest:1 picks 3 only
    manager.poll_once()
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [1, 2, 3]
    assert model.route.version_at(wall.now) == 1
    write_serving(repo_root, '{"default": 3}')  # no longer named: unloaded, 3 stays for the policy
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [3]


def test_pending_default_is_preloaded_and_switches_at_activate_at_without_a_poll(
    tmp_path: Path, repo_root: Path
) -> None:
    wall = WallClock()
    for version in (1, 2):
        push(repo_root, tmp_path, "m", version)
    write_serving(repo_root, ACTIVATION)
    manager, _, metrics = rollout_manager(tmp_path, repo_root, wall, version_policy="specific:1")
    manager.poll_once()
    route = manager.snapshot()["m"].route
    assert sorted(manager.snapshot()["m"].available) == [1, 2]  # 2 is warm before its time
    assert route.version_at(wall.now) == 1
    assert gauge(metrics, "rtserve_model_default_version") == 1.0
    assert gauge(metrics, "rtserve_model_pending_default_version") == 2.0
    wall.now = NOON  # no poll in between: the same snapshot answers differently, and so do the gauges
    assert manager.snapshot()["m"].route.version_at(wall.now) == 2
    assert gauge(metrics, "rtserve_model_default_version") == 2.0
    assert gauge(metrics, "rtserve_model_pending_default_version") == 0.0
    assert gauge(metrics, "rtserve_model_rollout_blocked") == 0.0
    manager.poll_once()  # 1 stays for the policy, 2 for the routing
    assert sorted(manager.snapshot()["m"].available) == [1, 2]


def test_the_previous_default_is_unloaded_only_after_the_switch(tmp_path: Path, repo_root: Path) -> None:
    wall = WallClock()
    for version in (1, 2):
        push(repo_root, tmp_path, "m", version)
    write_serving(repo_root, ACTIVATION)
    manager, loader, _ = rollout_manager(tmp_path, repo_root, wall)  # latest:1 wants 2 only
    manager.poll_once()
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [1, 2]
    assert loader.loaded[0].offset == 1.0  # what serves now loads first
    wall.now = NOON
    manager.poll_once()
    assert sorted(manager.snapshot()["m"].available) == [2]


def test_a_due_default_that_failed_keeps_the_old_one_and_says_so(
    tmp_path: Path, repo_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall = WallClock()
    push(repo_root, tmp_path, "m", 1)
    push(repo_root, tmp_path, "m", 2, broken=True)
    write_serving(repo_root, ACTIVATION)
    manager, _, metrics = rollout_manager(tmp_path, repo_root, wall)
    manager.poll_once()
    wall.now = NOON + 1
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [1]
    assert model.route.version_at(wall.now) == 1
    assert gauge(metrics, "rtserve_model_rollout_blocked") == 1.0
    assert gauge(metrics, "rtserve_model_pending_default_version") == 2.0
    assert "it is not AVAILABLE here; version 1 keeps serving" in caplog.text


def test_hand_written_activation_keeps_what_this_replica_served(tmp_path: Path, repo_root: Path) -> None:
    wall = WallClock()
    push(repo_root, tmp_path, "m", 1)
    manager, _, _ = rollout_manager(tmp_path, repo_root, wall)
    manager.poll_once()
    push(repo_root, tmp_path, "m", 2)
    write_serving(repo_root, '{"default": 2, "activate_at": "2025-11-25T12:00:00Z"}')
    manager.poll_once()
    manager.poll_once()  # the same file again must not forget the remembered version
    model = manager.snapshot()["m"]
    assert sorted(model.available) == [1, 2]
    assert model.route.version_at(wall.now) == 1
    assert model.route.version_at(NOON) == 2


def test_canary_weight_sends_a_share_of_default_requests(tmp_path: Path, repo_root: Path) -> None:
    import random

    from service.dataplane import DataPlane, Target

    push(repo_root, tmp_path, "m", 1)
    push(repo_root, tmp_path, "m", 2)
    write_serving(repo_root, '{"default": 1, "labels": {"canary": 2}, "canary_weight": 0.2}')
    manager, _, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    dataplane = DataPlane(manager, 1000, rng=random.Random(7))
    versions = [dataplane.resolve(Target("m")).version for _ in range(2000)]
    assert 0.17 < versions.count(2) / len(versions) < 0.23
    assert {dataplane.resolve(Target("m", version=1)).version for _ in range(50)} == {1}  # explicit: never split


def test_heap_is_settled_once_per_poll_that_changes_what_is_loaded(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    settings = Settings(repository=str(repo_root), cache_dir=str(tmp_path / "cache"))
    settles: list[int] = []
    manager = ModelManager(
        settings,
        LocalRepository(repo_root),
        FakeLoader(),
        Metrics(CollectorRegistry()),
        clock=Clock(),
        after_load_change=lambda: settles.append(1),
    )
    manager.poll_once()  # version 1 loaded
    manager.poll_once()  # nothing changed
    assert len(settles) == 1
    push(repo_root, tmp_path, "m", 2)
    manager.poll_once()  # version 2 loaded, version 1 unloaded: one settle for both
    assert len(settles) == 2
    assert sorted(manager.snapshot()["m"].available) == [2]
    manager.poll_once()
    assert len(settles) == 2
