"""Model lifecycle: poll the repository, apply each model's version policy, load, warm up, swap, unload.

Everything here runs on one background thread; request handlers only read ``snapshot()``, an immutable mapping
replaced whole after every change, so the hot path never takes the manager's lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from service.batching import Batcher
from service.drift import DriftMonitor, open_drift_monitor
from service.errors import Code, RepositoryError, ServingError
from service.heap import settle_heap
from service.metrics import Metrics
from service.repository.base import SERVING_CONFIG_NAME, Repository, VersionListing
from service.repository.cache import clean_stale_downloads, fetch_version, prune_cache
from service.routing import DefaultRoute, ServingConfig, format_activation, parse_serving_config
from service.runtime.base import Loader, Servable
from service.settings import Settings

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass(frozen=True)
class VersionStatus:
    """TF Serving's ModelVersionStatus: a state plus the last error, if any."""

    version: int
    state: str
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
    ) -> None:
        self.model = model
        self.version = version
        self.version_label = str(version)
        self.servable = servable
        self.batcher = batcher
        self.path = path
        self.drift = drift  # fed by the batcher, read when Prometheus scrapes
        self._lock = threading.Lock()
        self._leases = 0
        self._retired = False
        self._idle = threading.Event()
        self._idle.set()

    def acquire(self) -> bool:
        """Take a lease; False once the version is being unloaded (the caller resolves again)."""
        with self._lock:
            if self._retired:
                return False
            self._leases += 1
            self._idle.clear()
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            if self._leases == 0:
                self._idle.set()

    def retire(self, timeout_s: float) -> bool:
        """Refuse new leases and wait for the current ones; True when every lease came back in time."""
        with self._lock:
            self._retired = True
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Drain and stop the batcher (its thread may still be running a batch), then free the model."""
        self.batcher.close(timeout_s)
        self.servable.close()


@dataclass(frozen=True)
class ModelSnapshot:
    """One model's routing table: what can answer right now, its labels, its default and every status."""

    name: str
    available: Mapping[int, LoadedVersion]
    labels: Mapping[str, int]
    route: DefaultRoute
    statuses: tuple[VersionStatus, ...]

    @property
    def ready(self) -> bool:
        return bool(self.available)

    @property
    def default_version(self) -> int | None:
        """The default right now (the canary share aside); requests resolve through ``route`` themselves."""
        return self.route.version_at(time.time())


@dataclass
class _VersionRecord:
    """The manager's private bookkeeping for one version."""

    status: VersionStatus
    loaded: LoadedVersion | None = None
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class _ModelRecord:
    versions: dict[int, _VersionRecord] = field(default_factory=dict)
    # Fingerprints seen at the previous poll: a version without a manifest is complete once it repeats.
    previous_listing: dict[int, tuple[tuple[str, int, str], ...]] = field(default_factory=dict)
    serving: ServingConfig = field(default_factory=ServingConfig)
    polled_once: bool = False
    routing_gauges: bool = False  # the default-version gauges read this model's snapshot once registered
    rollout_blocked: bool = False  # the last snapshot found the new default due but not AVAILABLE (logged once)


class ModelManager:
    """Keeps the wanted versions of every configured model loaded, and publishes snapshots of them."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        loader: Loader,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        after_load_change: Callable[[], None] = settle_heap,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._loader = loader
        self._metrics = metrics
        self._clock = clock
        # serving.json's activate_at is a UTC time: compared with the wall clock, never the monotonic one.
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._after_load_change = after_load_change
        self._records: dict[str, _ModelRecord] = {}
        self._snapshot: Mapping[str, ModelSnapshot] = MappingProxyType({})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_failures = 0
        self._cache_dir = Path(settings.cache_dir)

    # -- what request handlers read -------------------------------------------------------------------------

    def snapshot(self) -> Mapping[str, ModelSnapshot]:
        return self._snapshot

    def is_ready(self) -> bool:
        """Every configured model has an AVAILABLE version; with '*', at least one model and none still loading.

        A model found by '*' whose every version fails does not hold the whole server unready: it is visible in
        its status and in the load-failure metric instead.
        """
        snapshot = self._snapshot
        if self._settings.serves_every_model:
            if not any(model.ready for model in snapshot.values()):
                return False
            return all(model.ready or not _first_load_pending(model) for model in snapshot.values())
        return all(name in snapshot and snapshot[name].ready for name in self._settings.models)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        # Downloads cut short by a crash or a kill leave temporary folders; nothing will finish them.
        clean_stale_downloads(self._cache_dir)
        self._thread = threading.Thread(target=self._run, name="rtserve-model-manager", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for record in self._records.values():
            for version_record in record.versions.values():
                if version_record.loaded is not None:
                    version_record.loaded.close(self._settings.drain_timeout_s)
                    version_record.loaded = None
        self._snapshot = MappingProxyType({})

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self._poll_failures = 0
            except RepositoryError as error:
                self._poll_failures += 1
                log.warning("repository poll failed (%d in a row): %s", self._poll_failures, error.message)
            except Exception:  # the poll thread must never die: it is what keeps models fresh
                self._poll_failures += 1
                log.exception("unexpected error while polling the repository")
            self._stop.wait(self._next_delay())

    def _next_delay(self) -> float:
        base: float = self._settings.poll_interval_s * 2.0 ** min(self._poll_failures, 16)
        base = min(base, max(self._settings.poll_max_backoff_s, self._settings.poll_interval_s))
        jitter = self._settings.poll_jitter
        return base * (1.0 + self._rng.uniform(-jitter, jitter))

    # -- one poll -------------------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """List the repository, load what the policies want, unload what they no longer want.

        RepositoryError propagates only when the repository could not be listed at all; a failure of one model's
        listing is counted and that model keeps serving what it has.
        """
        names = self._model_names()
        loaded_before = self._loaded_versions()
        any_failed = False
        for name in names:
            try:
                self._poll_model(name)
            except RepositoryError as error:
                any_failed = True
                log.warning("could not list model %s: %s", name, error.message)
        self._record_poll(success=not any_failed)
        self._publish()
        if self._loaded_versions() != loaded_before:
            self._after_load_change()

    def _loaded_versions(self) -> set[tuple[str, int]]:
        return {
            (name, version)
            for name, record in self._records.items()
            for version, entry in record.versions.items()
            if entry.loaded is not None
        }

    def _model_names(self) -> list[str]:
        explicit = [name for name in self._settings.models if name != "*"]
        if not self._settings.serves_every_model:
            return explicit
        try:
            found = self._repository.list_models()
        except RepositoryError:
            self._record_poll(success=False)
            raise
        # Models that disappeared from the listing keep serving: an empty listing is not a reason to go dark.
        return sorted(set(found) | set(explicit) | set(self._records))

    def _record_poll(self, success: bool) -> None:
        self._metrics.repository_polls.labels("success" if success else "error").inc()
        if success:
            self._metrics.repository_last_success.set(time.time())
        else:
            self._metrics.repository_poll_errors.inc()

    def _poll_model(self, name: str) -> None:
        record = self._records.setdefault(name, _ModelRecord())
        listings = self._repository.list_versions(name)
        record.serving = self._read_serving_config(name, record.serving)
        complete = self._complete_versions(record, listings)
        now = self._wall_clock()
        # The routing's versions are wanted whatever the policy says: a pending default must be warm at its switch.
        wanted = self._settings.policy_for(name).select(complete) | (record.serving.versions_to_load(now) & complete)
        first = record.serving.effective_default(now)
        for version in sorted(wanted, key=lambda v: (v != first, -v)):  # what serves now first, then newest first
            self._ensure_loaded(name, record, listings[version])
        self._unload_unwanted(name, record, wanted | self._still_routed(record))
        record.polled_once = True

    def _still_routed(self, record: _ModelRecord) -> set[int]:
        """Loaded versions the routing may still send requests to; they are never unloaded."""
        now = self._wall_clock()
        loaded = {v for v, r in record.versions.items() if r.loaded is not None}
        route = record.serving.route(loaded)
        routed = record.serving.versions_to_load(now)
        if not route.switched(now) and route.before is not None:
            routed.add(route.before)  # the old default serves until the new one takes over on this replica
        return routed & loaded

    def _read_serving_config(self, name: str, current: ServingConfig) -> ServingConfig:
        data = self._repository.read_model_file(name, SERVING_CONFIG_NAME)
        if data is None:
            return ServingConfig()
        try:
            config = parse_serving_config(data)
        except ValueError as error:
            # A bad edit must not reroute traffic: keep the last good routing and say why.
            log.error("model %s: ignoring invalid %s: %s", name, SERVING_CONFIG_NAME, error)
            return current
        return self._with_previous_default(name, config, current)

    def _with_previous_default(self, name: str, config: ServingConfig, current: ServingConfig) -> ServingConfig:
        """A hand-written activation without previous_default keeps what this replica served when it read it."""
        if config.activate_at is None or config.previous_default is not None:
            return config
        if replace(current, previous_default=None) == config:
            return current  # the same file again: keep the version remembered the first time
        snapshot = self._snapshot.get(name)
        served = snapshot.route.version_at(self._wall_clock()) if snapshot is not None else None
        return replace(config, previous_default=served)

    @staticmethod
    def _complete_versions(record: _ModelRecord, listings: Mapping[int, VersionListing]) -> set[int]:
        complete = set()
        for version, listing in listings.items():
            stable = record.previous_listing.get(version) == listing.fingerprint()
            if listing.has_manifest or (stable and listing.files):
                complete.add(version)
        record.previous_listing = {v: listing.fingerprint() for v, listing in listings.items()}
        return complete

    def _ensure_loaded(self, name: str, record: _ModelRecord, listing: VersionListing) -> None:
        version = listing.version
        existing = record.versions.get(version)
        if existing is not None and existing.loaded is not None:
            return
        if existing is not None and existing.failures and self._clock() < existing.retry_at:
            return
        entry = existing or _VersionRecord(VersionStatus(version, START))
        record.versions[version] = entry
        self._set_status(name, entry, VersionStatus(version, LOADING))
        self._publish()
        started = self._clock()
        try:
            path = fetch_version(self._repository, listing, self._cache_dir)
            servable = self._loader(path)
            batching = self._settings.batching.for_model(name)
            # Every batch size the batcher will use, so that no request pays for a first run at a new shape.
            servable.warm_up(batching.warm_up_sizes())
            where = f"model {name} version {version}"
            drift = open_drift_monitor(path, servable.signatures, self._settings.drift, where)
            batcher = Batcher(servable, batching, self._metrics, name, str(version), drift)
        except ServingError as error:
            self._load_failed(name, entry, error.code, error.message)
            return
        except Exception as error:  # a loader bug must not kill the poll thread or the serving versions
            log.exception("model %s version %d: unexpected load error", name, version)
            self._load_failed(name, entry, Code.UNKNOWN, f"{type(error).__name__}: {error}")
            return
        entry.loaded = LoadedVersion(name, version, servable, path, batcher, drift)
        entry.failures = 0
        self._metrics.model_loads.labels(name, str(version), "success").inc()
        self._metrics.model_load_duration.labels(name, str(version)).observe(self._clock() - started)
        self._set_status(name, entry, VersionStatus(version, AVAILABLE))
        log.info("model %s version %d is AVAILABLE", name, version)

    def _load_failed(self, name: str, entry: _VersionRecord, code: Code, message: str) -> None:
        entry.failures += 1
        delay = min(self._settings.load_retry_initial_s * 2 ** (entry.failures - 1), self._settings.load_retry_max_s)
        entry.retry_at = self._clock() + delay
        version = entry.status.version
        self._metrics.model_loads.labels(name, str(version), "failure").inc()
        self._set_status(name, entry, VersionStatus(version, END, code, message))
        log.error("model %s version %d failed to load (retry in %.0fs): %s", name, version, delay, message)

    def _unload_unwanted(self, name: str, record: _ModelRecord, wanted: set[int]) -> None:
        loaded = {v for v, r in record.versions.items() if r.loaded is not None}
        # A label naming a version that is not (yet) in the repository is no gap to fill.
        wanted = {v for v in wanted if v in record.versions}
        if not wanted:
            # Nothing complete is wanted (an emptied folder, a policy naming absent versions): keep serving.
            return
        missing = len([v for v in wanted if v not in loaded])
        # While wanted versions are missing, keep as many of the newest unwanted ones to fill the gap.
        keep_fallback = sorted(loaded - wanted, reverse=True)[:missing]
        for version in sorted(loaded - wanted - set(keep_fallback)):
            self._unload(name, record.versions[version])

    def _unload(self, name: str, entry: _VersionRecord) -> None:
        loaded = entry.loaded
        if loaded is None:
            return
        version = entry.status.version
        self._set_status(name, entry, VersionStatus(version, UNLOADING))
        entry.loaded = None
        self._publish()  # new requests stop seeing it before we wait for the ones in flight
        if not loaded.retire(self._settings.drain_timeout_s):
            log.warning("model %s version %d: unloading with requests still in flight", name, version)
        loaded.close(self._settings.drain_timeout_s)
        prune_cache(self._cache_dir, name, self._cached_paths(name))
        self._set_status(name, entry, VersionStatus(version, END))
        log.info("model %s version %d unloaded", name, version)

    def _cached_paths(self, name: str) -> set[Path]:
        record = self._records[name]
        return {r.loaded.path for r in record.versions.values() if r.loaded is not None}

    def _set_status(self, name: str, entry: _VersionRecord, status: VersionStatus) -> None:
        entry.status = status
        self._metrics.set_version_state(name, status.version, status.state)

    # -- publishing -----------------------------------------------------------------------------------------

    def _publish(self) -> None:
        models = {name: self._model_snapshot(name, record) for name, record in self._records.items()}
        self._snapshot = MappingProxyType(models)

    def _model_snapshot(self, name: str, record: _ModelRecord) -> ModelSnapshot:
        available = {v: r.loaded for v, r in record.versions.items() if r.loaded is not None}
        route = record.serving.route(set(available))
        self._note_rollout(name, record, route)
        statuses = tuple(replace(r.status) for _, r in sorted(record.versions.items(), key=lambda item: -item[0]))
        return ModelSnapshot(
            name=name,
            available=MappingProxyType(available),
            labels=MappingProxyType(dict(record.serving.labels)),
            route=route,
            statuses=statuses,
        )

    def _note_rollout(self, name: str, record: _ModelRecord, route: DefaultRoute) -> None:
        """Register the routing gauges once a default exists, and log when a due switch has to wait."""
        if not record.routing_gauges and route.before is not None:
            record.routing_gauges = True
            self._register_routing_gauges(name)
        blocked = route.blocked(self._wall_clock())
        if blocked and not record.rollout_blocked and route.activate_at is not None:
            log.warning(
                "model %s: serving.json switched the default to version %s at %s, but it is not AVAILABLE here; "
                "version %s keeps serving until it is",
                name,
                route.after,
                format_activation(route.activate_at),
                route.before,
            )
        record.rollout_blocked = blocked

    def _register_routing_gauges(self, name: str) -> None:
        """Gauges computed at scrape time from the live snapshot, so they change at activate_at, not at a poll."""

        def route_of() -> DefaultRoute | None:
            snapshot = self._snapshot.get(name)
            return snapshot.route if snapshot is not None else None

        def default() -> float:
            route = route_of()
            version = route.version_at(self._wall_clock()) if route is not None else None
            return float("nan") if version is None else float(version)

        def pending() -> float:
            route = route_of()
            return float((route.pending_at(self._wall_clock()) if route is not None else None) or 0)

        def blocked() -> float:
            route = route_of()
            return 1.0 if route is not None and route.blocked(self._wall_clock()) else 0.0

        self._metrics.default_version.labels(name).set_function(default)
        self._metrics.pending_default_version.labels(name).set_function(pending)
        self._metrics.rollout_blocked.labels(name).set_function(blocked)


def _first_load_pending(model: ModelSnapshot) -> bool:
    """True while a model has versions to load but has not finished a load attempt on any of them."""
    return bool(model.statuses) and not any(status.state in (AVAILABLE, END) for status in model.statuses)
