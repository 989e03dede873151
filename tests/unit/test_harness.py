"""One version's harness on its own: states, back-off, deadlines and leases, with a fake runtime and a fake clock.

The manager's tests (test_manager.py, test_model_set.py) show these rules through polls and threads; here each
rule is pinned down directly, without a manager, a poll or a wait.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fakes import FakeLoader, FakeServable, write_fake_version
from service.errors import Code, DeadlineExceeded
from service.manager import LoadedVersion, VersionStatus
from service.manager.harness import Backoff, LoadAttempt, LoadSteps, VersionHarness
from service.observability.metrics import LOAD_PHASES, STATES, Metrics
from service.repository.base import ProgressCallback, VersionListing
from service.repository.local import LocalRepository
from service.runtime.base import Loader
from service.settings import Settings
from service.states import UNKNOWN_NUMBER, VersionState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reports:
    """The harness's ``report`` callback: every status it announced, in order."""

    def __init__(self) -> None:
        self.seen: list[VersionStatus] = []

    def __call__(self, model: str, status: VersionStatus) -> None:
        assert model == "m"
        self.seen.append(status)

    @property
    def states(self) -> list[VersionState]:
        return [status.state for status in self.seen]


class SlowRepository(LocalRepository):
    """A local repository whose downloads take ``seconds`` of the fake clock."""

    def __init__(self, root: Path, clock: Clock, seconds: float) -> None:
        super().__init__(root)
        self.clock, self.seconds = clock, seconds

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        self.clock.now += self.seconds
        super().download_version(listing, destination, progress)


def harness() -> tuple[VersionHarness, Reports]:
    reports = Reports()
    return VersionHarness("m", 3, reports), reports


def steps(tmp_path: Path, clock: Clock, loader: Loader, load_timeout_s: float = 5.0) -> LoadSteps:
    settings = Settings(
        repository=str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"), load_timeout_s=load_timeout_s
    )
    return LoadSteps(settings, loader, Metrics(CollectorRegistry()), tmp_path / "cache", clock)


def published(tmp_path: Path, repository: LocalRepository, version: int = 3) -> VersionListing:
    repository.upload_version("m", version, write_fake_version(tmp_path / "src" / str(version), version))
    return repository.list_versions("m")[version]


# -- the states ----------------------------------------------------------------------------------------------


def test_the_states_are_tf_servings_names_and_numbers() -> None:
    assert [state.value for state in VersionState] == ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    assert [state.number for state in VersionState] == [10, 20, 30, 40, 50]
    assert UNKNOWN_NUMBER == 0
    # The value is the name: JSON, metric labels and string comparisons see what they saw before the enum.
    assert json.dumps({"state": VersionState.AVAILABLE}) == '{"state": "AVAILABLE"}'
    assert VersionState.END == "END"
    assert VersionState("LOADING") is VersionState.LOADING
    assert tuple(VersionState) == STATES  # the metric's series are exactly these, not a list of its own


def test_a_version_goes_through_tf_servings_states_and_each_change_is_reported(tmp_path: Path) -> None:
    entry, reports = harness()
    assert entry.state is VersionState.START and reports.seen == []  # START is not reported: nothing to show yet
    attempt = entry.begin(LocalRepository(tmp_path))
    assert entry.attempt is attempt and not entry.due(0.0)  # never a second attempt while one runs
    loaded = LoadedVersion("m", 3, FakeServable(write_fake_version(tmp_path / "v", 3)), tmp_path / "v", None)  # type: ignore[arg-type]
    entry.end_attempt()
    assert entry.succeeded(loaded, stale=False) is None
    assert entry.loaded is loaded and not entry.due(0.0)
    assert entry.retire() is loaded and entry.loaded is None
    entry.unloaded()
    assert reports.states == [VersionState.LOADING, VersionState.AVAILABLE, VersionState.UNLOADING, VersionState.END]
    assert entry.retire() is None and len(reports.seen) == 4  # nothing loaded: no UNLOADING to report


# -- retries with back-off -----------------------------------------------------------------------------------


def test_the_back_off_doubles_from_the_initial_delay_up_to_the_maximum() -> None:
    backoff = Backoff(initial_s=2.0, max_s=30.0)
    assert [backoff.delay(failures) for failures in range(1, 8)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_failed_version_is_due_again_exactly_when_its_back_off_ends(tmp_path: Path) -> None:
    entry, reports = harness()
    backoff = Backoff(initial_s=2.0, max_s=30.0)
    now = 1000.0
    schedule = []
    for _ in range(6):
        assert entry.due(now)
        entry.begin(LocalRepository(tmp_path))
        entry.end_attempt()
        delay = entry.failed(Code.INTERNAL, "corrupt saved_model.pb", now, backoff)
        schedule.append(delay)
        assert not entry.due(now + delay - 0.001)  # one millisecond early: still waiting
        now += delay
    assert schedule == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert entry.due(now)
    assert entry.status == VersionStatus(3, VersionState.END, Code.INTERNAL, "corrupt saved_model.pb")
    assert reports.states == [VersionState.LOADING, VersionState.END] * 6


def test_a_success_resets_the_back_off_and_a_failed_reload_keeps_the_loaded_copy_serving(tmp_path: Path) -> None:
    entry, _ = harness()
    backoff = Backoff(initial_s=2.0, max_s=30.0)
    entry.failed(Code.INTERNAL, "first", 0.0, backoff)
    entry.failed(Code.INTERNAL, "second", 0.0, backoff)
    loaded = LoadedVersion("m", 3, FakeServable(write_fake_version(tmp_path / "v", 3)), tmp_path / "v", None)  # type: ignore[arg-type]
    entry.succeeded(loaded, stale=False)
    assert entry.failures == 0
    entry.moved()  # the base path moved: reload at once, the copy in memory serving meanwhile
    assert entry.stale and entry.due(0.0)
    assert entry.failed(Code.UNAVAILABLE, "cannot list the new place", 0.0, backoff) == 2.0  # counted from one again
    assert entry.loaded is loaded
    assert entry.status == VersionStatus(3, VersionState.AVAILABLE, Code.UNAVAILABLE, "cannot list the new place")


# -- deadlines -----------------------------------------------------------------------------------------------


def test_an_attempt_expires_once_at_its_deadline_and_hands_over_its_servable(tmp_path: Path) -> None:
    attempt = LoadAttempt(3, LocalRepository(tmp_path))
    assert attempt.expire(1e18) == (False, None)  # not armed yet: the download has no deadline
    attempt.arm(1005.0)
    assert attempt.expire(1004.999) == (False, None)
    servable = FakeServable(write_fake_version(tmp_path / "v", 3))
    assert attempt.hold(servable)
    assert attempt.expire(1005.0) == (True, servable)  # the watchdog aborts this one
    assert attempt.abandoned
    assert attempt.expire(2000.0) == (False, None)  # counted and failed once, however often the watchdog looks
    assert not attempt.hold(servable)  # a load that comes back late learns it was abandoned


def test_the_deadline_starts_after_the_download(tmp_path: Path) -> None:
    clock = Clock()
    repository = SlowRepository(tmp_path / "repo", clock, seconds=100.0)
    listing = published(tmp_path, repository)
    attempt = LoadAttempt(3, repository)
    loaded = steps(tmp_path, clock, FakeLoader(), load_timeout_s=5.0).run("m", listing, attempt)
    assert clock.now == 1100.0  # the download took 100 s of a 5 s load timeout, and did not count
    assert attempt.expire(1104.999) == (False, None)
    assert attempt.expire(1105.0)[0]
    loaded.close(1.0)


def test_no_deadline_when_the_load_timeout_is_off(tmp_path: Path) -> None:
    clock = Clock()
    repository = LocalRepository(tmp_path / "repo")
    attempt = LoadAttempt(3, repository)
    loaded = steps(tmp_path, clock, FakeLoader(), load_timeout_s=0.0).run("m", published(tmp_path, repository), attempt)
    assert attempt.expire(1e18) == (False, None)
    loaded.close(1.0)


def test_an_attempt_abandoned_before_warm_up_closes_its_servable_and_never_warms_it(tmp_path: Path) -> None:
    clock = Clock()
    repository = LocalRepository(tmp_path / "repo")
    listing = published(tmp_path, repository)
    attempt = LoadAttempt(3, repository)
    fake = FakeLoader()

    def loader(path: Path) -> FakeServable:
        servable = fake(path)
        clock.now += 10.0  # the SavedModel load itself passes the 5 s deadline: the watchdog fires meanwhile
        assert attempt.expire(clock()) == (True, None)  # nothing held yet: nothing to abort
        return servable

    with pytest.raises(DeadlineExceeded, match="abandoned at its deadline before warm-up"):
        steps(tmp_path, clock, loader).run("m", listing, attempt)
    servable = fake.servable(3.0)
    assert servable.closed and servable.warmed == ()


# -- leases --------------------------------------------------------------------------------------------------


def loaded_version(tmp_path: Path) -> tuple[VersionHarness, Reports, LoadedVersion]:
    """A harness whose version has loaded (fake runtime): the entry, its reports and the loaded version."""
    clock = Clock()
    repository = LocalRepository(tmp_path / "repo")
    entry, reports = harness()
    attempt = entry.begin(repository)
    loaded = steps(tmp_path, clock, FakeLoader()).run("m", published(tmp_path, repository), attempt)
    entry.end_attempt()
    entry.succeeded(loaded, stale=False)
    return entry, reports, loaded


def test_a_lease_held_across_an_unload_keeps_the_version_until_it_returns(tmp_path: Path) -> None:
    entry, reports, loaded = loaded_version(tmp_path)
    assert loaded.acquire()  # a request leases the version

    retiring = entry.retire()  # the manager unloads it: out of the snapshot, UNLOADING
    assert retiring is loaded and entry.state is VersionState.UNLOADING
    assert not loaded.retire(0.0)  # the lease is still out: not idle, and no new lease from now on
    assert not loaded.acquire()
    servable = loaded.servable
    assert isinstance(servable, FakeServable) and not servable.closed  # the request in flight can still run
    loaded.release()
    assert loaded.retire(0.0)  # every lease is back: the version can be freed
    loaded.close(1.0)
    entry.unloaded()
    assert servable.closed
    assert reports.states[-2:] == [VersionState.UNLOADING, VersionState.END]


def test_a_load_records_the_time_of_each_of_its_phases_in_order(tmp_path: Path) -> None:
    clock = Clock()
    repository = SlowRepository(tmp_path / "repo", clock, seconds=100.0)
    listing = published(tmp_path, repository)
    fake = FakeLoader()

    def slow_loader(path: Path) -> FakeServable:
        clock.now += 7.0  # TensorFlow reading the SavedModel
        return fake(path)

    loaded = steps(tmp_path, clock, slow_loader).run("m", listing, LoadAttempt(3, repository))
    assert tuple(loaded.phases) == LOAD_PHASES
    assert loaded.phases["download"] == 100.0
    assert loaded.phases["load"] == 7.0
    assert loaded.phases["warm_up"] == loaded.phases["drift"] == loaded.phases["batch_safety"] == 0.0
    loaded.close(1.0)


def test_an_unload_waiting_for_a_lease_wakes_when_the_last_one_returns(tmp_path: Path) -> None:
    _, _, loaded = loaded_version(tmp_path)
    assert loaded.acquire() and loaded.acquire()  # two requests in flight
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(loaded.retire(60.0)))
    waiter.start()
    loaded.release()
    waiter.join(0.2)
    assert waiter.is_alive()  # one lease still out: the unload keeps waiting
    loaded.release()
    waiter.join(60.0)  # bounded: woken by the last release, long before its own timeout
    assert drained == [True]
    assert not loaded.acquire()
