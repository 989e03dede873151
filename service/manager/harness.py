"""One model version's harness (TF Serving's LoaderHarness): its state, its load attempts, retries and leases.

The manager decides which versions to load and when; a ``VersionHarness`` holds what one version is going
through: its state and last error (``VersionStatus``), the load attempt in flight with its deadline, the failures
and when the next attempt is due (exponential back-off), and the loaded copy that requests lease
(``LoadedVersion``). ``LoadSteps`` runs one attempt: fetch, load, warm up, drift monitor, batcher.

Locking: a harness is the manager's bookkeeping and changes only under the manager's lock; a ``LoadAttempt``
has a lock of its own for the fields its load thread and the watchdog share (deadline, servable, abandoned),
which is never held while taking another.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.batching import Batcher
from service.errors import Code, DeadlineExceeded
from service.observability.drift import DriftMonitor, open_drift_monitor
from service.observability.metrics import Metrics
from service.repository.base import Repository, VersionListing
from service.repository.cache import fetch_version
from service.runtime.base import Loader, Servable, abortable_scope
from service.settings import Settings
from service.states import VersionState


@dataclass(frozen=True)
class VersionStatus:
    """TF Serving's ModelVersionStatus: a state plus the last error, if any."""

    version: int
    state: VersionState
    error_code: Code = Code.OK
    error_message: str = ""


class LoadedVersion:
    """A servable in memory and its batcher. Requests lease it so that unloading waits for the ones still using it."""

    def __init__(
        self,
        model: str,
        version: int,
        servable: Servable,
        path: Path,
        batcher: Batcher,
        drift: DriftMonitor | None = None,
        phases: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.version_label = str(version)
        self.servable = servable
        self.batcher = batcher
        self.path = path
        self.drift = drift  # fed by the batcher, read when Prometheus scrapes
        self.phases: Mapping[str, float] = phases or {}  # seconds per LoadSteps phase (metrics.LOAD_PHASES)
        self._lock = threading.Lock()
        # Signalled on the lease lock only once retired: a lease then costs the lock and a count, not an
        # Event's own lock twice per request.
        self._drained = threading.Condition(self._lock)
        self._leases = 0
        self._retired = False

    def acquire(self) -> bool:
        """Take a lease; False once the version is being unloaded (the caller resolves again)."""
        with self._lock:
            if self._retired:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            if self._leases == 0 and self._retired:
                self._drained.notify_all()

    def retire(self, timeout_s: float) -> bool:
        """Refuse new leases and wait for the current ones; True when every lease came back in time."""
        with self._lock:
            self._retired = True
            return self._drained.wait_for(lambda: self._leases == 0, timeout_s)

    def close(self, timeout_s: float) -> None:
        """Drain and stop the batcher (its thread may still be running a batch), then free the model."""
        self.batcher.close(timeout_s)
        self.servable.close()


class LoadAttempt:
    """One load of one version on its model's job thread; the watchdog fails it at its deadline.

    The deadline is armed once the download is done: it bounds load and warm-up, not the transfer.
    """

    def __init__(self, version: int, repository: Repository) -> None:
        self.version = version
        self.repository = repository  # the model's origin when the load began: a base path moved meanwhile reloads
        self.holds_slot = False  # one of the RTSERVE_LOAD_WORKERS slots (the manager's, under its lock)
        self._lock = threading.Lock()
        self._deadline = math.inf
        self._servable: Servable | None = None
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        """Past its deadline: whatever its thread returns with is dropped."""
        with self._lock:
            return self._abandoned

    def arm(self, deadline: float) -> None:
        with self._lock:
            self._deadline = deadline

    def hold(self, servable: Servable) -> bool:
        """Keep the loaded servable, so that an expiry can abort its warm-up; False when already abandoned."""
        with self._lock:
            self._servable = servable
            return not self._abandoned

    def expire(self, now: float) -> tuple[bool, Servable | None]:
        """Abandon the attempt when ``now`` is past its deadline: (True, the servable to abort) the first time."""
        with self._lock:
            if self._abandoned or now < self._deadline:
                return False, None
            self._abandoned = True
            return True, self._servable


@dataclass(frozen=True)
class Backoff:
    """How long a version waits after its n-th failure in a row: doubling from ``initial_s`` up to ``max_s``;
    for ever (inf) once ``max_retries`` retries have failed too (TF Serving's --max_num_load_retries)."""

    initial_s: float
    max_s: float
    max_retries: int | None = None

    def delay(self, failures: int) -> float:
        if self.max_retries is not None and failures > self.max_retries:
            return math.inf
        return float(min(self.initial_s * 2.0 ** max(failures - 1, 0), self.max_s))


# Told every state change, with the model's name: the manager points it at rtserve_model_version_state.
StatusReport = Callable[[str, VersionStatus], None]


@dataclass
class VersionHarness:
    """One version of one model: its status, the load in flight, its failures and its loaded copy.

    Every method runs under the manager's lock; each state change is reported (``report``) as it happens.
    """

    model: str
    version: int
    report: StatusReport
    status: VersionStatus = field(init=False)
    loaded: LoadedVersion | None = None
    failures: int = 0
    retry_at: float = 0.0
    # A load in flight, or abandoned at its deadline and still running: either way never a second one.
    attempt: LoadAttempt | None = None
    stale: bool = False  # loaded from a base path the model set has since moved: reloaded, serving meanwhile

    def __post_init__(self) -> None:
        self.status = VersionStatus(self.version, VersionState.START)  # known, not loading yet: not reported

    @property
    def state(self) -> VersionState:
        return self.status.state

    def due(self, now: float) -> bool:
        """Whether a load should start now: not loaded (or loaded from a moved base path), none running, no back-off."""
        if (self.loaded is not None and not self.stale) or self.attempt is not None:
            return False
        return not (self.failures and now < self.retry_at)

    def begin(self, repository: Repository) -> LoadAttempt:
        attempt = self.attempt = LoadAttempt(self.version, repository)
        self._set(VersionStatus(self.version, VersionState.LOADING))
        return attempt

    def end_attempt(self) -> None:
        """Its thread is back (installed, failed, or abandoned earlier): the next attempt may start."""
        self.attempt = None

    def succeeded(self, loaded: LoadedVersion, stale: bool) -> LoadedVersion | None:
        """Serve ``loaded`` from now on; returns the copy it replaces (a reload), for the caller to drain."""
        replaced, self.loaded = self.loaded, loaded
        self.stale = stale
        self.failures = 0
        self._set(VersionStatus(self.version, VersionState.AVAILABLE))
        return replaced

    def failed(self, code: Code, message: str, now: float, backoff: Backoff) -> float:
        """Count a failure, keep it in the status and schedule the retry; returns the delay until it."""
        self.failures += 1
        delay = backoff.delay(self.failures)
        self.retry_at = now + delay
        # A failed reload (from a moved base path) leaves the loaded copy serving: AVAILABLE, with the error.
        state = VersionState.AVAILABLE if self.loaded is not None else VersionState.END
        self._set(VersionStatus(self.version, state, code, message))
        return delay

    def moved(self) -> None:
        """The model's base path changed: reload from the new place at once, the loaded copy serving meanwhile."""
        self.stale, self.failures, self.retry_at = True, 0, 0.0

    def retire(self) -> LoadedVersion | None:
        """Out of service: UNLOADING, and the loaded copy handed over for draining (None when nothing is loaded)."""
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            self._set(VersionStatus(self.version, VersionState.UNLOADING))
        return loaded

    def unloaded(self) -> None:
        self._set(VersionStatus(self.version, VersionState.END))

    def _set(self, status: VersionStatus) -> None:
        self.status = status
        self.report(self.model, status)


@dataclass(frozen=True)
class LoadSteps:
    """What one load attempt does, in order: fetch to the cache, load, warm up, drift monitor, batcher.

    Everything after the download runs under the load deadline; what runs TensorFlow on this thread inside the
    abortable scope (warm-up and any load-time check) is cancelled when the watchdog aborts the servable.
    """

    settings: Settings
    loader: Loader
    metrics: Metrics
    cache_dir: Path
    clock: Callable[[], float]

    def run(self, name: str, listing: VersionListing, attempt: LoadAttempt) -> LoadedVersion:
        version = listing.version
        phases: dict[str, float] = {}
        last = self.clock()

        def done(phase: str) -> None:  # each phase's time, for rtserve_model_load_phase_seconds and the ready log
            nonlocal last
            now = self.clock()
            phases[phase], last = now - last, now

        path = fetch_version(attempt.repository, listing, self.cache_dir)
        done("download")
        timeout = self.settings.load_timeout_s
        attempt.arm(self.clock() + timeout if timeout > 0 else math.inf)
        servable = self.loader(path)
        done("load")
        try:
            if not attempt.hold(servable):
                raise DeadlineExceeded("abandoned at its deadline before warm-up")
            with abortable_scope(servable):
                batching = self.settings.batching.for_model(name)
                # Every batch size the batcher will use, so that no request pays for a first run at a new shape.
                if self.settings.model_warmup:
                    servable.warm_up(batching.warm_up_sizes())
                done("warm_up")
                where = f"model {name} version {version}"
                drift = open_drift_monitor(path, servable.signatures, self.settings.drift, where)
                done("drift")
                batcher = Batcher(servable, batching, self.metrics, name, str(version), drift)
                done("batch_safety")
        except BaseException:
            servable.close()
            raise
        return LoadedVersion(name, version, servable, path, batcher, drift, phases)
