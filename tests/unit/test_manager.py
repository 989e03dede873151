"""The model manager's lifecycle rules, on a real local repository with a fake runtime (no TensorFlow)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from fakes import SIGNATURE, FakeLoader, write_fake_version
from service.errors import Code, RepositoryError, Unavailable
from service.manager import ModelManager, VersionStatus
from service.observability.metrics import LOAD_PHASES, Metrics
from service.repository.local import LocalRepository
from service.settings import Settings
from service.states import VersionState


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
        settings, LocalRepository(repo_root), loader, metrics, clock=clock or Clock(), after_load_change=lambda _: None
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
            "rtserve_model_version_state", {"model_name": "m", "model_version": "2", "state": VersionState.AVAILABLE}
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
    assert states == {2: VersionState.AVAILABLE, 1: VersionState.END}


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
    assert failed.state == VersionState.END
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
    manager, _, _ = make_manager(tmp_path, repo_root, models=["m", "plain"], batching=batching)
    manager.poll_once()
    by_model = {name: model.available[1] for name, model in manager.snapshot().items()}
    warmed = {name: loaded.servable.warmed for name, loaded in by_model.items()}  # type: ignore[attr-defined]
    assert warmed == {"m": (1, 2, 4, 6), "plain": (1,)}
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
        after_load_change=lambda unloaded: settles.append(unloaded),
    )
    manager.poll_once()  # version 1 loaded
    manager.poll_once()  # nothing changed
    assert len(settles) == 1
    push(repo_root, tmp_path, "m", 2)
    manager.poll_once()  # version 2 loaded, version 1 unloaded: one settle for both
    assert settles == [False, True]  # only the one after an unload has frozen garbage to look at
    assert sorted(manager.snapshot()["m"].available) == [2]
    manager.poll_once()
    assert len(settles) == 2


# -- the lifecycle never freezes: load deadlines, other models, readiness, stand-ins, bad routing files --------


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """A bounded wait for the manager's job threads (real threads; the deadlines themselves use the clock)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def push_marked(repo_root: Path, tmp_path: Path, model: str, version: int, **marks: bool) -> None:
    source = write_fake_version(tmp_path / "src" / f"{model}-{version}", version, **marks)
    LocalRepository(repo_root).upload_version(model, version, source)


def available(manager: ModelManager, name: str) -> list[int]:
    model = manager.snapshot().get(name)
    return sorted(model.available) if model is not None else []


def status(manager: ModelManager, name: str, version: int) -> VersionStatus:
    return next(s for s in manager.snapshot()[name].statuses if s.version == version)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_hung_warm_up_fails_at_its_deadline_and_never_holds_other_models(tmp_path: Path, repo_root: Path) -> None:
    clock = Clock()
    for name in ("a", "b"):
        push(repo_root, tmp_path, name, 1)
    manager, loader, metrics = make_manager(tmp_path, repo_root, clock, load_timeout_s=60.0, load_retry_initial_s=10.0)
    manager.poll_once()
    push_marked(repo_root, tmp_path, "a", 2, hang=True)  # warms up until aborted, like a while_loop on zeros
    push(repo_root, tmp_path, "b", 2)
    manager.poll_once(wait=False)  # the poll thread never waits for a load
    wait_for(lambda: any(s.hangs and s.warming.is_set() for s in loader.loaded), "a's warm-up to hang")
    wait_for(lambda: available(manager, "b") == [2], "b's new version while a's warm-up hangs")
    hung = next(s for s in loader.loaded if s.hangs)
    assert not hung.aborted.is_set()
    assert available(manager, "a") == [1] and status(manager, "a", 2).state == VersionState.LOADING
    push(repo_root, tmp_path, "b", 3)  # b's polls and loads go on while a's load hangs
    manager.poll_once(wait=False)
    wait_for(lambda: available(manager, "b") == [3], "b's next version while a's warm-up hangs")

    clock.now += 61  # past the deadline: the watchdog fails the load and cancels the warm-up
    manager.check_deadlines()
    failed = status(manager, "a", 2)
    assert (failed.state, failed.error_code) == (VersionState.END, Code.DEADLINE_EXCEEDED)
    assert "RTSERVE_LOAD_TIMEOUT_S=60s" in failed.error_message
    assert sample(metrics, "rtserve_model_loads_total", model_name="a", model_version="2", outcome="failure") == 1.0
    assert hung.aborted.is_set()
    wait_for(lambda: sample(metrics, "rtserve_model_loads_abandoned") == 0.0, "the cancelled warm-up to return")
    assert hung.closed and available(manager, "a") == [1] and manager.is_ready()

    calls = loader.calls
    manager.poll_once(wait=False)  # inside the back-off window: not retried
    assert loader.calls == calls
    clock.now += 11
    manager.poll_once(wait=False)  # after it: retried (and hangs again)
    wait_for(lambda: loader.calls == calls + 1, "the retry")
    manager.stop(timeout_s=0.5)


def test_a_load_that_cannot_be_stopped_is_abandoned_counted_and_never_started_twice(
    tmp_path: Path, repo_root: Path
) -> None:
    clock = Clock()
    push(repo_root, tmp_path, "a", 1)
    manager, loader, metrics = make_manager(tmp_path, repo_root, clock, load_timeout_s=5.0, load_retry_initial_s=1.0)
    manager.poll_once()
    push_marked(repo_root, tmp_path, "a", 2, stuck=True)  # ignores abort: the thread cannot be stopped
    manager.poll_once(wait=False)
    wait_for(lambda: any(s.stuck and s.warming.is_set() for s in loader.loaded), "the stuck warm-up")
    clock.now += 6
    manager.check_deadlines()
    assert status(manager, "a", 2).error_code == Code.DEADLINE_EXCEEDED
    assert sample(metrics, "rtserve_model_loads_abandoned") == 1.0
    calls = loader.calls
    clock.now += 100  # long past the back-off: still no second load of the same version while one is stuck
    manager.poll_once(wait=False)
    manager.poll_once(wait=False)
    assert loader.calls == calls
    push(repo_root, tmp_path, "a", 3)  # the model's other versions still load
    manager.poll_once()
    assert available(manager, "a") == [3]
    loader.release.set()  # the stuck thread finally returns: its result is dropped, never served
    wait_for(lambda: sample(metrics, "rtserve_model_loads_abandoned") == 0.0, "the abandoned load to return")
    stuck = next(s for s in loader.loaded if s.stuck)
    assert stuck.closed and available(manager, "a") == [3]


def test_rollouts_of_other_models_go_on_while_a_load_hangs(tmp_path: Path, repo_root: Path) -> None:
    wall = WallClock()
    clock = Clock()
    push(repo_root, tmp_path, "a", 1)
    push(repo_root, tmp_path, "m", 1)
    settings = Settings(repository=str(repo_root), cache_dir=str(tmp_path / "cache"), load_timeout_s=60.0)
    loader = FakeLoader()
    manager = ModelManager(
        settings, LocalRepository(repo_root), loader, Metrics(CollectorRegistry()), clock, wall_clock=wall
    )
    manager.poll_once()
    push_marked(repo_root, tmp_path, "a", 2, hang=True)
    push(repo_root, tmp_path, "m", 2)
    write_serving(repo_root, ACTIVATION)  # m switches from 1 to 2 at NOON
    manager.poll_once(wait=False)
    wait_for(lambda: available(manager, "m") == [1, 2], "m's pending default to be preloaded")
    assert status(manager, "a", 2).state == VersionState.LOADING
    assert manager.snapshot()["m"].route.version_at(wall.now) == 1
    wall.now = NOON
    assert manager.snapshot()["m"].route.version_at(wall.now) == 2
    clock.now += 61
    manager.check_deadlines()
    manager.stop(timeout_s=0.5)


def test_publishing_a_new_model_never_makes_a_ready_replica_unready(tmp_path: Path, repo_root: Path) -> None:
    clock = Clock()
    push(repo_root, tmp_path, "a", 1)
    manager, loader, _ = make_manager(tmp_path, repo_root, clock, load_timeout_s=60.0)
    manager.poll_once()
    assert manager.is_ready()
    push_marked(repo_root, tmp_path, "b", 1, hang=True)  # a new model whose first load takes (for ever)
    manager.poll_once(wait=False)
    wait_for(lambda: any(s.hangs and s.warming.is_set() for s in loader.loaded), "b's first load")
    assert status(manager, "b", 1).state == VersionState.LOADING
    assert manager.is_ready(), "a replica that was ready stays ready while a new model loads"
    clock.now += 61
    manager.check_deadlines()  # b fails: still ready (b never counted, as in TF Serving)
    assert manager.is_ready()
    push(repo_root, tmp_path, "b", 2)
    manager.poll_once()
    assert available(manager, "b") == [2] and manager.is_ready()


def test_before_the_first_ready_a_model_still_loading_holds_readiness(tmp_path: Path, repo_root: Path) -> None:
    clock = Clock()
    push(repo_root, tmp_path, "a", 1)
    push_marked(repo_root, tmp_path, "b", 1, hang=True)
    manager, loader, _ = make_manager(tmp_path, repo_root, clock, load_timeout_s=60.0)
    manager.poll_once(wait=False)
    wait_for(lambda: available(manager, "a") == [1], "a's first load")
    wait_for(lambda: any(s.hangs and s.warming.is_set() for s in loader.loaded), "b's first load to hang")
    assert not manager.is_ready(), "DESIGN.md section 4: with '*', none still loading before the first ready"
    clock.now += 61
    manager.check_deadlines()  # b's attempt ended (failed): a alone makes the replica ready
    assert manager.is_ready()
    manager.stop(timeout_s=0.5)


@pytest.mark.parametrize("policy, expected", [("latest:1", [2]), ("latest:2", [1, 2])])
def test_a_fresh_replica_serves_the_newest_versions_that_load(
    tmp_path: Path, repo_root: Path, policy: str, expected: list[int]
) -> None:
    clock = Clock()
    for version in (1, 2):
        push(repo_root, tmp_path, "m", version)
    push(repo_root, tmp_path, "m", 3, broken=True)  # the newest is corrupt before this replica starts
    manager, _, _ = make_manager(tmp_path, repo_root, clock, version_policy=policy, load_retry_initial_s=10.0)
    manager.poll_once()
    assert available(manager, "m") == expected
    assert manager.snapshot()["m"].default_version == 2 and manager.is_ready()
    assert status(manager, "m", 3).state == VersionState.END and "corrupt" in status(manager, "m", 3).error_message
    clock.now += 11
    manager.poll_once()  # 3 is retried, still fails: the stand-ins stay
    assert available(manager, "m") == expected
    push(repo_root, tmp_path, "m", 4)  # a good newer version replaces the stand-ins
    manager.poll_once()
    assert available(manager, "m") == ([4] if policy == "latest:1" else [2, 4])


def test_every_broken_stand_in_is_skipped_down_to_one_that_loads(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    push(repo_root, tmp_path, "m", 2, broken=True)
    push(repo_root, tmp_path, "m", 3, broken=True)
    manager, _, _ = make_manager(tmp_path, repo_root)
    manager.poll_once()
    assert available(manager, "m") == [1]


GOOD_ROUTING = '{"default": "stable", "labels": {"stable": 1, "canary": 2}}'
UNAPPLICABLE_ROUTINGS = {
    "year 1 with a zone offset": '{"default": 2, "activate_at": "0001-01-01T00:00:00+01:00"}',
    "year 9999 with a negative offset": '{"default": 2, "activate_at": "9999-12-31T23:59:59-01:00"}',
    "a version past the repository's range": '{"default": 1, "labels": {"stable": 18000000000000000000}}',
    "a float version": '{"default": 2.0}',
    "a number too large for a double": '{"default": 1, "canary_weight": 1e999}',
    "NaN": '{"default": 1, "canary_weight": NaN}',
    "a label naming an absent version": '{"default": "stable", "labels": {"stable": 7}}',
    "a default naming an absent version": '{"default": 9}',
    "invalid UTF-8": b'{"default": "\xff"}',
    "a huge file": "{" + " " * (70 * 1024) + '"default": 2}',
    "a list": "[1, 2]",
}


@pytest.mark.parametrize("document", list(UNAPPLICABLE_ROUTINGS.values()), ids=list(UNAPPLICABLE_ROUTINGS))
def test_a_serving_json_that_cannot_be_applied_is_counted_shown_and_ignored(
    tmp_path: Path, repo_root: Path, document: str | bytes
) -> None:
    wall = WallClock()
    for version in (1, 2):
        push(repo_root, tmp_path, "m", version)
    push(repo_root, tmp_path, "n", 1)
    write_serving(repo_root, GOOD_ROUTING)
    manager, _, metrics = rollout_manager(tmp_path, repo_root, wall)
    manager.poll_once()
    assert manager.snapshot()["m"].default_version == 1
    data = document.encode() if isinstance(document, str) else document
    LocalRepository(repo_root).write_model_file("m", "serving.json", data)
    push(repo_root, tmp_path, "n", 2)  # the other model's poll goes on in the same polls
    manager.poll_once()
    manager.poll_once()
    model = manager.snapshot()["m"]
    assert model.default_version == 1 and dict(model.labels) == {"stable": 1, "canary": 2}  # the last good one
    assert model.serving_error.startswith("serving.json")
    assert sample(metrics, "rtserve_serving_config_rejections_total", model_name="m") == 1.0  # once per file
    assert sample(metrics, "rtserve_serving_config_invalid", model_name="m") == 1.0
    assert available(manager, "n") == [2]
    write_serving(repo_root, '{"default": 2}')  # fixed: applies at the next poll
    manager.poll_once()
    assert manager.snapshot()["m"].default_version == 2 and not manager.snapshot()["m"].serving_error
    assert sample(metrics, "rtserve_serving_config_invalid", model_name="m") == 0.0


def test_version_folders_with_leading_zeros_load_as_their_number(tmp_path: Path, repo_root: Path) -> None:
    write_fake_version(repo_root / "m" / "00000123", 123)  # TF Serving's own test models are named so
    write_fake_version(repo_root / "m" / "7", 7)
    manager, _, _ = make_manager(tmp_path, repo_root, version_policy="all")
    manager.poll_once()
    manager.poll_once()  # no manifest: complete once the listing repeats
    assert available(manager, "m") == [7, 123]
    outputs = asyncio.run(
        manager.snapshot()["m"].available[123].batcher.submit(SIGNATURE, {"x": np.array([[1.0]], np.float32)})
    )
    assert outputs["y"].tolist() == [[124.0]]
    manager.stop()


def test_failed_loads_stop_after_max_load_retries(tmp_path: Path, repo_root: Path) -> None:
    # TF Serving's --max_num_load_retries=1: the first attempt and one retry, then the version is given up.
    clock = Clock()
    push(repo_root, tmp_path, "m", 1, broken=True)
    manager, loader, _ = make_manager(tmp_path, repo_root, clock, load_retry_initial_s=10.0, max_load_retries=1)
    manager.poll_once()
    assert loader.calls == 1
    clock.now += 11
    manager.poll_once()
    assert loader.calls == 2
    for _ in range(3):
        clock.now += 10_000
        manager.poll_once()
    assert loader.calls == 2, "no attempt after the last retry"
    (status,) = manager.snapshot()["m"].statuses
    assert status.state == VersionState.END
    assert "corrupt" in status.error_message


def test_model_warmup_off_skips_the_warm_up(tmp_path: Path, repo_root: Path) -> None:
    # TF Serving's --enable_model_warmup=false
    push(repo_root, tmp_path, "m", 1)
    manager, _, _ = make_manager(tmp_path, repo_root, model_warmup=False)
    manager.poll_once()
    assert manager.snapshot()["m"].available[1].servable.warmed == ()  # type: ignore[attr-defined]
    push(repo_root, tmp_path, "w", 1)
    warm, _, _ = make_manager(tmp_path / "warm", repo_root)
    warm.poll_once()
    assert warm.snapshot()["w"].available[1].servable.warmed != ()  # type: ignore[attr-defined]


def test_the_first_ready_is_told_once_and_each_load_exports_its_phases(tmp_path: Path, repo_root: Path) -> None:
    push(repo_root, tmp_path, "m", 1)
    told: list[list[str]] = []
    settings = Settings(repository=str(repo_root), cache_dir=str(tmp_path / "cache"))
    metrics = Metrics(CollectorRegistry())
    manager = ModelManager(
        settings,
        LocalRepository(repo_root),
        FakeLoader(),
        metrics,
        clock=Clock(),
        after_load_change=lambda _: None,
        on_first_ready=lambda snapshot: told.append(sorted(snapshot)),
    )
    manager.poll_once()
    push(repo_root, tmp_path, "m", 2)
    manager.poll_once()  # ready all along: not told again
    assert told == [["m"]]
    for version in ("1", "2"):
        phases = {
            phase: metrics.registry.get_sample_value(
                "rtserve_model_load_phase_seconds", {"model_name": "m", "model_version": version, "phase": phase}
            )
            for phase in LOAD_PHASES
        }
        assert all(seconds is not None and seconds >= 0.0 for seconds in phases.values()), phases
    metrics.forget_versions("m", [1])
    assert (
        metrics.registry.get_sample_value(
            "rtserve_model_load_phase_seconds", {"model_name": "m", "model_version": "1", "phase": "load"}
        )
        is None
    )
