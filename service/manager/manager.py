"""The manager: apply a model set, poll its source, reconcile each model (what to load, what to unload), publish.

One poll thread lists the repository (through the source, source.py) and decides; each model's loads and unloads
run on a job thread of its own, each version carried through its states by its harness (harness.py), and a
watchdog fails loads that pass RTSERVE_LOAD_TIMEOUT_S. Request handlers only read ``snapshot()``, an immutable
mapping replaced whole (under the manager's lock) after every change, so the hot path never locks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from service.errors import Code, RepositoryError, ServingError
from service.manager.harness import (
    Backoff,
    LoadAttempt,
    LoadedVersion,
    LoadSteps,
    VersionHarness,
    VersionStatus,
)
from service.manager.heap import settle_heap
from service.manager.routing import (
    MAX_SERVING_CONFIG_BYTES,
    DefaultRoute,
    ServingConfig,
    check_named_versions,
    format_activation,
    parse_serving_config,
)
from service.manager.source import (
    MODEL_CONFIG_LIST,
    Completeness,
    ModelList,
    ModelOrigin,
    ModelSetError,
    ModelSetStatus,
    ModelSource,
    RepositoryScan,
    as_model_set,
    check_labels,
    check_reachable,
    keep_repository,
    open_model_list,
    with_labels,
)
from service.model_set import ModelSet
from service.observability.metrics import Metrics
from service.repository.base import SERVING_CONFIG_NAME, Repository, VersionListing
from service.repository.cache import clean_stale_downloads, prune_cache
from service.runtime.base import Loader, Servable, abort
from service.settings import Settings
from service.states import VersionState

log = logging.getLogger(__name__)

# How often the watchdog looks for loads past their deadline (real seconds; the deadline itself uses the clock).
WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True)
class ModelSnapshot:
    """One model's routing table: what can answer right now, its labels, its default and every status."""

    name: str
    available: Mapping[int, LoadedVersion]
    labels: Mapping[str, int]
    route: DefaultRoute
    statuses: tuple[VersionStatus, ...]
    serving_error: str = ""  # why this model's serving.json is being ignored (the last good routing serves)

    @property
    def ready(self) -> bool:
        return bool(self.available)

    @property
    def default_version(self) -> int | None:
        """The default right now (the canary share aside); requests resolve through ``route`` themselves."""
        return self.route.version_at(time.time())


@dataclass
class _Job:
    """One model's reconcile run on its own thread: load what is wanted one version at a time, then unload."""

    name: str
    done: threading.Event = field(default_factory=threading.Event)
    attempt: LoadAttempt | None = None  # the load it runs (or ran last)

    @property
    def detached(self) -> bool:
        """Its load passed its deadline: the model may start another job meanwhile."""
        return self.attempt is not None and self.attempt.abandoned


@dataclass
class _ModelRecord:
    origin: ModelOrigin  # where the versions are listed from, the version policy, the model set's labels
    versions: dict[int, VersionHarness] = field(default_factory=dict)
    completeness: Completeness = field(default_factory=Completeness)  # which listed versions are complete
    listings: dict[int, VersionListing] = field(default_factory=dict)
    complete: set[int] = field(default_factory=set)
    serving: ServingConfig = field(default_factory=ServingConfig)
    serving_error: str = ""  # why the current serving.json is ignored; empty when it applies
    rejected_digest: str = ""  # the ignored file's sha256: each bad file is counted once, not once per poll
    job: _Job | None = None  # at most one reconcile job per model at a time
    routing_gauges: bool = False  # the default-version gauges read this model's snapshot once registered
    rollout_blocked: bool = False  # the last snapshot found the new default due but not AVAILABLE (logged once)
    dropped: bool = False  # no longer in the model set: out of the snapshot, unloaded, then forgotten

    @property
    def routing(self) -> ServingConfig:
        """serving.json's routing with the model set's version labels (which win where both name a label)."""
        return with_labels(self.serving, self.origin.labels)


class ModelManager:
    """Keeps the wanted versions of every configured model loaded, and publishes snapshots of them.

    The poll thread only lists, reads serving.json and decides; each model's loads and unloads run on that
    model's own job thread (at most one per model, at most ``load_workers`` loading at once), so a slow or stuck
    model never holds another's polls, loads or rollouts. A watchdog fails loads past ``load_timeout_s``.
    Every change of the bookkeeping happens under one lock and ends with a new snapshot.
    """

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        loader: Loader,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        after_load_change: Callable[[bool], None] = settle_heap,
        on_first_ready: Callable[[Mapping[str, ModelSnapshot]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._loader = loader
        self._metrics = metrics
        self._clock = clock
        # serving.json's activate_at is a UTC time: compared with the wall clock, never the monotonic one.
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._after_load_change = after_load_change
        self._on_first_ready = on_first_ready  # told once, under the lock, with the snapshot that made it ready
        self._lock = threading.RLock()
        self._slots = threading.Semaphore(settings.load_workers)
        self._records: dict[str, _ModelRecord] = {}
        self._snapshot: Mapping[str, ModelSnapshot] = MappingProxyType({})
        self._ready = False
        self._ready_once = False  # readiness has been true once: from then on new models count once loaded
        self._counted: set[str] = set()  # the models readiness waits for after the first ready
        self._polled_once = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._poll_failures = 0
        self._cache_dir = Path(settings.cache_dir)
        self._steps = LoadSteps(settings, loader, metrics, self._cache_dir, clock)
        self._backoff = Backoff(settings.load_retry_initial_s, settings.load_retry_max_s, settings.max_load_retries)
        # Which models, from where (service/manager/source.py); replaced whole by apply_model_set.
        self._source: ModelSource = (
            RepositoryScan(settings, repository)
            if settings.model_config_list is None
            else open_model_list(settings.model_config_list, settings.s3)
        )
        self._model_set_status = ModelSetStatus(self._source.kind, self._source.models)
        self._nudge = threading.Event()  # set by apply_model_set: poll now rather than at the next interval
        self._applying = threading.Lock()

    # -- what request handlers read -------------------------------------------------------------------------

    def snapshot(self) -> Mapping[str, ModelSnapshot]:
        return self._snapshot

    @property
    def cache_dir(self) -> Path:
        """Where versions are downloaded: the data plane keeps these paths out of what clients read."""
        return self._cache_dir

    def is_ready(self) -> bool:
        """Computed with every snapshot (see ``_readiness``)."""
        return self._ready

    def _readiness(self, snapshot: Mapping[str, ModelSnapshot]) -> bool:
        """DESIGN.md section 4 until the first ready; from then on, every model that has been AVAILABLE here.

        A model that appears later (``RTSERVE_MODELS=*``) counts once it has loaded, as in TF Serving, so that
        publishing a model never takes a serving replica out of its Service while the model loads.
        """
        if not self._ready_once:
            # Until a whole poll has recorded every model, a model polled late could be missed.
            if not self._polled_once or not self._first_ready(snapshot):
                return False
            self._ready_once = True
            if self._on_first_ready is not None:
                self._on_first_ready(snapshot)
        self._counted |= {name for name, model in snapshot.items() if model.ready}
        return all(snapshot[name].ready for name in self._counted if name in snapshot)

    def _first_ready(self, snapshot: Mapping[str, ModelSnapshot]) -> bool:
        """Every configured model has an AVAILABLE version; with '*', at least one model and none still loading.

        A model found by '*' whose every version fails does not hold the whole server unready: it is visible in
        its status and in the load-failure metric instead.
        """
        required = self._source.required()
        if required is None:
            if not any(model.ready for model in snapshot.values()):
                return False
            return all(model.ready or not _first_load_pending(model) for model in snapshot.values())
        # An empty model list is not ready either: zero models never is (DESIGN.md section 4).
        return bool(required) and all(name in snapshot and snapshot[name].ready for name in required)

    def model_set_status(self) -> ModelSetStatus:
        """The model set serving now, and why the last one offered was refused, if it was."""
        return self._model_set_status

    # -- the model set --------------------------------------------------------------------------------------

    def apply_model_set(self, model_set: ModelSet | Mapping[str, object], wait: bool = False) -> None:
        """Serve ``model_set`` from now on: TF Serving's model_config_list (typed, or its JSON mapping).

        New models load at once (they count for readiness once AVAILABLE, see ``_readiness``); dropped ones
        leave the snapshot and unload once their leases return; kept ones keep serving, reloaded only when their
        base path moved. A set that cannot be applied raises ModelSetError and changes nothing: the error is in
        ``model_set_status()``, ``rtserve_model_config_reloads_total{outcome="failure"}`` and the log. With
        ``wait`` it returns once the unloads and loads it started (kept and dropped models) are done; models new
        to the set load after their first listing, at the poll it triggers.
        """
        with self._applying:  # one change at a time: each is checked against the set it replaces
            self._apply_model_set(model_set, wait)

    def _apply_model_set(self, model_set: ModelSet | Mapping[str, object], wait: bool) -> None:
        try:
            models = open_model_list(as_model_set(model_set), self._settings.s3)
            check_reachable(models, self._source)  # I/O: outside the lock
            with self._lock:
                available = {name: set(snapshot.available) for name, snapshot in self._snapshot.items()}
                allow = self._settings.allow_version_labels_for_unavailable_models
                check_labels(models, self._source, available, allow)
                jobs = self._switch_source(models)
        except ModelSetError as error:
            self._model_set_status = replace(self._model_set_status, error_code=error.code, error_message=error.message)
            self._metrics.model_config_reloads.labels("failure").inc()
            log.error("model set refused, the current one keeps serving: %s", error.message)
            raise
        for job in jobs:
            self._launch(job)
        if wait:
            self._wait_for(jobs)
        applied = self._model_set_status.applied + 1
        self._model_set_status = ModelSetStatus(MODEL_CONFIG_LIST, models.models, applied)
        self._metrics.model_config_reloads.labels("success").inc()
        log.info("model set applied: %s", ", ".join(models.models) or "no models")
        self._nudge.set()  # list the new and moved models now, not at the next interval

    def _switch_source(self, models: ModelList) -> list[_Job]:
        """Under the lock: drop, keep or move every known model, then make ``models`` the source."""
        jobs: list[_Job] = []
        origins = dict(models.origins())
        for name, record in list(self._records.items()):
            origin = origins.get(name)
            if origin is None:
                if not record.dropped:
                    record.dropped = True
                    self._counted.discard(name)  # if it comes back, it counts for readiness once loaded again
                    log.info("model %s: dropped from the model set, unloading", name)
            else:
                origins[name], moved = keep_repository(origin, record.origin)
                record.dropped = False
                record.origin = origins[name]
                if moved:
                    self._moved(name, record)
            job = self._job_for(name, record)
            if job is not None:
                jobs.append(job)
            self._forget_if_dropped(name)  # nothing loaded, nothing loading: it goes at once
        self._source = ModelList(origins)
        self._publish()
        return jobs

    def _moved(self, name: str, record: _ModelRecord) -> None:
        """A kept model's base path changed: what is loaded serves until its reload from the new place is up."""
        log.info("model %s: base path is now %s, reloading its versions from there", name, record.origin.base_path)
        record.listings, record.complete, record.completeness = {}, set(), Completeness()
        for version, entry in list(record.versions.items()):
            if entry.loaded is not None:
                entry.moved()
            elif entry.attempt is None:
                del record.versions[version]  # the old place's history: nothing of it serves
                self._metrics.forget_versions(name, [version])

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        # Downloads cut short by a crash or a kill leave temporary folders; nothing will finish them.
        clean_stale_downloads(self._cache_dir)
        for target, name in ((self._run, "rtserve-model-manager"), (self._watch, "rtserve-load-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._nudge.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            jobs = [record.job for record in self._records.values() if record.job is not None]
        for job in jobs:  # a load in progress finishes and is dropped; a stuck one is not waited for
            job.done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            closing = [entry.loaded for record in self._records.values() for entry in record.versions.values()]
            for record in self._records.values():
                for entry in record.versions.values():
                    entry.loaded = None
            self._snapshot = MappingProxyType({})
            self._ready = False
        for loaded in closing:
            if loaded is not None:
                loaded.close(self._settings.drain_timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
                self._poll_failures = 0
            except RepositoryError as error:
                self._poll_failures += 1
                log.warning("repository poll failed (%d in a row): %s", self._poll_failures, error.message)
            except Exception:  # the poll thread must never die: it is what keeps models fresh
                self._poll_failures += 1
                log.exception("unexpected error while polling the repository")
            self._nudge.wait(self._next_delay())
            self._nudge.clear()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.check_deadlines()
            except Exception:  # the watchdog must never die either
                log.exception("unexpected error while checking load deadlines")

    def _next_delay(self) -> float:
        base: float = self._settings.poll_interval_s * 2.0 ** min(self._poll_failures, 16)
        base = min(base, max(self._settings.poll_max_backoff_s, self._settings.poll_interval_s))
        jitter = self._settings.poll_jitter
        return base * (1.0 + self._rng.uniform(-jitter, jitter))

    # -- one poll -------------------------------------------------------------------------------------------

    def poll_once(self, wait: bool = True) -> None:
        """List the repository and start each model's loads and unloads.

        With ``wait`` (tests and tools) it returns once the jobs it started have finished or passed their load
        deadline; the poll thread itself never waits for a load. RepositoryError propagates only when the
        repository could not be listed at all; a failure of one model is counted and the others go on.
        """
        jobs = self._poll()
        if wait:
            self._wait_for(jobs)

    def _wait_for(self, jobs: list[_Job]) -> None:
        """Until each job has finished or passed its load deadline (tests and tools; never the poll thread)."""
        for job in jobs:
            while not job.done.wait(WATCH_INTERVAL_S) and not job.detached:
                self.check_deadlines()

    def _poll(self) -> list[_Job]:
        names = self._model_names()
        jobs: list[_Job] = []
        any_failed = False
        for name in names:
            try:
                job = self._poll_model(name)
            except RepositoryError as error:
                any_failed = True
                log.warning("could not list model %s: %s", name, error.message)
                continue
            except Exception:  # one model's surprise must not stop the polls of the others
                any_failed = True
                log.exception("model %s: unexpected error while polling", name)
                continue
            if job is not None:
                jobs.append(job)
        self._record_poll(success=not any_failed)
        with self._lock:
            self._polled_once = True
            self._publish()
        return jobs

    def _model_names(self) -> list[str]:
        with self._lock:
            known = {name for name, record in self._records.items() if not record.dropped}
        try:
            return self._source.names(known)
        except RepositoryError:
            self._record_poll(success=False)
            raise

    def _record_poll(self, success: bool) -> None:
        self._metrics.repository_polls.labels("success" if success else "error").inc()
        if success:
            self._metrics.repository_last_success.set(time.time())
        else:
            self._metrics.repository_poll_errors.inc()

    def _poll_model(self, name: str) -> _Job | None:
        """Read what the repository holds for one model and start its job when there is work for it."""
        origin = self._source.origin(name)
        if origin is None:
            return None  # dropped from the model set since the poll began
        listings = origin.repository.list_versions(name)
        data = origin.repository.read_model_file(name, SERVING_CONFIG_NAME, MAX_SERVING_CONFIG_BYTES)
        with self._lock:
            current = self._source.origin(name)
            if current is None or current.repository is not origin.repository:
                return None  # the model set moved or dropped it while listing: the next poll lists the new place
            record = self._records.setdefault(name, _ModelRecord(current))
            record.listings = listings
            record.complete = record.completeness.update(listings)
            record.serving = self._read_serving_config(name, record, data)
            wanted = self._wanted(name, record)
            for version in wanted:  # START until its load begins: readiness waits for it
                self._harness(name, record, version)
            for version in [v for v, r in record.versions.items() if r.state is VersionState.START and v not in wanted]:
                del record.versions[version]  # superseded (or deleted) before its load began: nothing to report
            job = self._job_for(name, record)
        if job is not None:
            self._launch(job)
        return job

    def _job_for(self, name: str, record: _ModelRecord) -> _Job | None:
        """A new job for the model when it has work and none running (under the lock); ``_launch`` starts it."""
        if record.job is not None or (self._next_load(name, record) is None and not self._unwanted(name, record)):
            return None
        job = record.job = _Job(name)
        return job

    def _launch(self, job: _Job) -> None:
        threading.Thread(target=self._reconcile, args=(job,), name=f"rtserve-load-{job.name}", daemon=True).start()

    def _wanted(self, name: str, record: _ModelRecord) -> set[int]:
        """The versions to have loaded: the policy's, the routing's, and for latest:N stand-ins for failures."""
        policy = record.origin.policy
        complete = record.complete
        # The routing's versions are wanted whatever the policy says: a pending default must be warm at its switch.
        wanted = policy.select(complete) | (record.routing.versions_to_load(self._wall_clock()) & complete)
        if policy.kind == "latest":
            # Newest versions that fail to load are stood in for by the newest older ones that do, on a fresh
            # replica as on one that already serves; they are still retried, and replace the stand-ins once up.
            wanted |= policy.select(complete - self._stood_in(name, record))
        return wanted

    def _stood_in(self, name: str, record: _ModelRecord) -> set[int]:
        """Versions whose last load failed and that older versions stand in for (latest:N only)."""
        if record.origin.policy.kind != "latest":
            return set()
        return {v for v, r in record.versions.items() if r.loaded is None and r.failures}

    def _next_load(self, name: str, record: _ModelRecord) -> VersionListing | None:
        """The wanted version to load next (what serves now first, then newest first), if any is due."""
        if record.dropped:
            return None
        now = self._clock()
        first = record.routing.effective_default(self._wall_clock())
        for version in sorted(self._wanted(name, record), key=lambda v: (v != first, -v)):
            entry = record.versions.get(version)
            if entry is None or entry.due(now):
                return record.listings[version]
        return None

    def _still_routed(self, record: _ModelRecord) -> set[int]:
        """Loaded versions the routing may still send requests to; they are never unloaded."""
        now = self._wall_clock()
        loaded = {v for v, r in record.versions.items() if r.loaded is not None}
        route = record.routing.route(loaded)
        routed = record.routing.versions_to_load(now)
        if route.activate_at is not None and not route.switched(now) and route.before is not None:
            # The old default serves until the new one takes over on this replica. Without a switch pending, the
            # newest AVAILABLE version is no pin: a policy that no longer wants it (specific:1) unloads it.
            routed.add(route.before)
        return routed & loaded

    def _read_serving_config(self, name: str, record: _ModelRecord, data: bytes | None) -> ServingConfig:
        """The routing to apply: the file's, or the last good one when the file cannot be applied."""
        if data is None:
            self._serving_config_applies(name, record)
            return ServingConfig()
        try:
            config = parse_serving_config(data)
            check_named_versions(config, set(record.listings), self._wall_clock())
            config = self._with_previous_default(name, config, record.serving)
        except Exception as error:  # ValueError names the problem; anything else is still the file's fault
            reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            self._serving_config_rejected(name, record, data, reason)
            return record.serving
        self._serving_config_applies(name, record)
        return config

    def _serving_config_rejected(self, name: str, record: _ModelRecord, data: bytes, reason: str) -> None:
        # A bad edit must not reroute traffic: the last good routing stays, and the file is counted and named.
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.rejected_digest:
            self._metrics.serving_config_rejections.labels(name).inc()
            log.error("model %s: ignoring %s, the last good routing stays: %s", name, SERVING_CONFIG_NAME, reason)
        record.rejected_digest = digest
        record.serving_error = reason
        self._metrics.serving_config_invalid.labels(name).set(1.0)

    def _serving_config_applies(self, name: str, record: _ModelRecord) -> None:
        record.rejected_digest = record.serving_error = ""
        self._metrics.serving_config_invalid.labels(name).set(0.0)

    def _with_previous_default(self, name: str, config: ServingConfig, current: ServingConfig) -> ServingConfig:
        """A hand-written activation without previous_default keeps what this replica served when it read it."""
        if config.activate_at is None or config.previous_default is not None:
            return config
        if replace(current, previous_default=None) == config:
            return current  # the same file again: keep the version remembered the first time
        snapshot = self._snapshot.get(name)
        served = snapshot.route.version_at(self._wall_clock()) if snapshot is not None else None
        return replace(config, previous_default=served)

    # -- one model's job ------------------------------------------------------------------------------------

    def _reconcile(self, job: _Job) -> None:
        """Load the wanted versions one at a time, unload what is no longer wanted, until nothing is left to do.

        The last look and the end of the job happen under the lock, as the poll's update does: work a poll adds
        while the job runs is either seen here or starts a new job.
        """
        changed = unloaded = False
        try:
            while True:
                retiring: list[tuple[VersionHarness, LoadedVersion]] = []
                with self._lock:
                    if job.detached or self._stop.is_set():
                        break  # (a detached job's dropped model may be forgotten by now)
                    record = self._records[job.name]
                    listing = self._next_load(job.name, record)
                    if listing is not None:
                        attempt = self._begin_attempt(job, record, listing.version)
                    else:
                        retiring = self._retire_unwanted(job.name, record)
                        if not retiring:
                            record.job = None
                            self._forget_if_dropped(job.name)
                            break
                if listing is not None:
                    changed |= self._load(job.name, listing, attempt)
                else:
                    self._unload(job.name, retiring)
                    changed = unloaded = True
        except Exception:  # a bug here must not leave the model without jobs for good
            log.exception("model %s: unexpected error in its load job", job.name)
        finally:
            with self._lock:
                # Gone when the job ended by forgetting its dropped model.
                if (last := self._records.get(job.name)) is not None and last.job is job:
                    last.job = None
            job.done.set()
        if changed:
            self._after_load_change(unloaded)

    def _begin_attempt(self, job: _Job, record: _ModelRecord, version: int) -> LoadAttempt:
        attempt = job.attempt = self._harness(job.name, record, version).begin(record.origin.repository)
        self._publish()
        return attempt

    def _harness(self, name: str, record: _ModelRecord, version: int) -> VersionHarness:
        """The version's harness, made at START the first time the version is wanted."""
        entry = record.versions.get(version)
        if entry is None:
            entry = record.versions[version] = VersionHarness(name, version, self._report)
        return entry

    def _load(self, name: str, listing: VersionListing, attempt: LoadAttempt) -> bool:
        """One load attempt, in one of the bounded load slots; True when the version became AVAILABLE."""
        self._slots.acquire()
        with self._lock:
            attempt.holds_slot = True
        started = self._clock()
        loaded: LoadedVersion | None = None
        failure: tuple[Code, str] = (Code.OK, "")
        try:
            loaded = self._steps.run(name, listing, attempt)
        except ServingError as error:
            failure = (error.code, error.message)
        except Exception as error:  # a loader bug must not kill the job or the serving versions
            log.exception("model %s version %d: unexpected load error", name, listing.version)
            failure = (Code.UNKNOWN, f"{type(error).__name__}: {error}")
        return self._finish_attempt(name, attempt, loaded, failure, self._clock() - started)

    def _finish_attempt(
        self, name: str, attempt: LoadAttempt, loaded: LoadedVersion | None, failure: tuple[Code, str], took: float
    ) -> bool:
        version = attempt.version
        replaced: LoadedVersion | None = None
        with self._lock:
            record = self._records[name]
            entry = record.versions[version]
            self._release_slot(attempt)
            entry.end_attempt()
            abandoned = attempt.abandoned
            installed = loaded is not None and not abandoned and not self._stop.is_set() and not record.dropped
            if abandoned:
                # The watchdog already failed it; its thread is back (cancelled, or it finished late).
                self._metrics.loads_abandoned.dec()
                log.warning("model %s version %d: the load abandoned at its deadline has returned", name, version)
            elif installed and loaded is not None:
                # A reload from a new base path: the old copy serves until now, then drains (below).
                replaced = entry.succeeded(loaded, stale=attempt.repository is not record.origin.repository)
                self._metrics.model_loads.labels(name, str(version), "success").inc()
                self._metrics.model_load_duration.labels(name, str(version)).observe(took)
                for phase, seconds in loaded.phases.items():
                    self._metrics.model_load_phase.labels(name, str(version), phase).set(seconds)
                log.info("model %s version %d is AVAILABLE", name, version)
            elif loaded is None and not self._stop.is_set():
                self._load_failed(name, entry, *failure)
            self._publish()
            self._forget_if_dropped(name)
        if loaded is not None and not installed:
            loaded.close(0.0)
        if replaced is not None:
            self._drain(name, replaced)
            self._prune(name)
        return installed

    def check_deadlines(self) -> None:
        """Fail every load past RTSERVE_LOAD_TIMEOUT_S and try to stop it; the watchdog calls this.

        The version is failed with DEADLINE_EXCEEDED (counted, retried with back-off, the old version serving);
        its job is detached so that the model's other work goes on; its servable is aborted, which cancels a
        TensorFlow warm-up in flight. A thread that cannot be stopped is counted in rtserve_model_loads_abandoned
        until it returns, and the same version is not loaded again meanwhile.
        """
        aborting: list[Servable] = []
        abandoned = False
        with self._lock:
            now = self._clock()
            for name, record in self._records.items():
                for entry in record.versions.values():
                    attempt = entry.attempt
                    if attempt is None:
                        continue
                    expired, servable = attempt.expire(now)
                    if not expired:
                        continue
                    abandoned = True
                    if record.job is not None and record.job.attempt is attempt:
                        record.job = None  # detached (see _Job.detached): the model's other work goes on
                    self._release_slot(attempt)
                    self._metrics.loads_abandoned.inc()
                    timeout = self._settings.load_timeout_s
                    message = f"load and warm-up did not finish within RTSERVE_LOAD_TIMEOUT_S={timeout:g}s"
                    self._load_failed(name, entry, Code.DEADLINE_EXCEEDED, message)
                    if servable is not None:
                        aborting.append(servable)
            if abandoned:
                self._publish()
        for servable in aborting:
            abort(servable)

    def _release_slot(self, attempt: LoadAttempt) -> None:
        if attempt.holds_slot:
            attempt.holds_slot = False
            self._slots.release()

    def _load_failed(self, name: str, entry: VersionHarness, code: Code, message: str) -> None:
        delay = entry.failed(code, message, self._clock(), self._backoff)
        version = entry.version
        self._metrics.model_loads.labels(name, str(version), "failure").inc()
        when = f"retry in {delay:.0f}s" if delay < math.inf else "given up: RTSERVE_MAX_LOAD_RETRIES reached"
        log.error("model %s version %d failed to load (%s): %s", name, version, when, message)

    def _unwanted(self, name: str, record: _ModelRecord) -> list[int]:
        """Loaded versions to unload now: neither wanted nor routed, nor needed to fill a wanted one's gap."""
        loaded = {v for v, r in record.versions.items() if r.loaded is not None}
        if record.dropped:
            return sorted(loaded)  # out of the model set: every version goes (each once its leases are back)
        wanted = self._wanted(name, record) | self._still_routed(record)
        # A label naming a version that is not (yet) in the repository is no gap to fill.
        wanted = {v for v in wanted if v in record.versions}
        if not wanted:
            # Nothing complete is wanted (an emptied folder, a policy naming absent versions): keep serving.
            return []
        stood_in = self._stood_in(name, record)  # their stand-ins are wanted themselves: no gap to fill
        missing = len([v for v in wanted if v not in loaded and v not in stood_in])
        # While wanted versions are missing, keep as many of the newest unwanted ones to fill the gap.
        keep_fallback = sorted(loaded - wanted, reverse=True)[:missing]
        return sorted(loaded - wanted - set(keep_fallback))

    def _retire_unwanted(self, name: str, record: _ModelRecord) -> list[tuple[VersionHarness, LoadedVersion]]:
        """Take the unwanted versions out of the snapshot (under the lock); ``_unload`` then drains and frees them."""
        retiring: list[tuple[VersionHarness, LoadedVersion]] = []
        for version in self._unwanted(name, record):
            entry = record.versions[version]
            loaded = entry.retire()
            if loaded is not None:
                retiring.append((entry, loaded))
        if retiring:
            self._publish()  # new requests stop seeing them before we wait for the ones in flight
        return retiring

    def _unload(self, name: str, retiring: list[tuple[VersionHarness, LoadedVersion]]) -> None:
        for _entry, loaded in retiring:
            self._drain(name, loaded)
        with self._lock:
            for entry, loaded in retiring:
                entry.unloaded()
                log.info("model %s version %d unloaded", name, loaded.version)
            self._publish()
        self._prune(name)

    def _drain(self, name: str, loaded: LoadedVersion) -> None:
        """Wait for the leases of a version already out of the snapshot, then free it."""
        if not loaded.retire(self._settings.drain_timeout_s):
            log.warning("model %s version %d: unloading with requests still in flight", name, loaded.version)
        loaded.close(self._settings.drain_timeout_s)

    def _prune(self, name: str) -> None:
        with self._lock:
            keep = self._cached_paths(name)
        prune_cache(self._cache_dir, name, keep)

    def _cached_paths(self, name: str) -> set[Path]:
        record = self._records.get(name)  # a forgotten model keeps nothing in the cache
        return {r.loaded.path for r in record.versions.values() if r.loaded is not None} if record else set()

    def _forget_if_dropped(self, name: str) -> None:
        """Once a dropped model has nothing loaded and no load running, its record, status and series go."""
        record = self._records.get(name)
        if record is None or not record.dropped or record.job is not None:
            return
        if any(entry.loaded is not None or entry.attempt is not None for entry in record.versions.values()):
            return
        del self._records[name]
        self._metrics.forget_model(name, list(record.versions))
        log.info("model %s is no longer served: removed from the model set", name)

    def _report(self, name: str, status: VersionStatus) -> None:
        """Every harness's state change, as it happens (under the lock): the state series follow it."""
        self._metrics.set_version_state(name, status.version, status.state)

    # -- publishing (under the lock) ------------------------------------------------------------------------

    def _publish(self) -> None:
        if self._stop.is_set():
            return  # stopped: a job that finishes late must not bring its model back
        models = {name: self._model_snapshot(name, r) for name, r in self._records.items() if not r.dropped}
        self._snapshot = MappingProxyType(models)
        self._ready = self._readiness(self._snapshot)

    def _model_snapshot(self, name: str, record: _ModelRecord) -> ModelSnapshot:
        available = {v: r.loaded for v, r in record.versions.items() if r.loaded is not None}
        routing = record.routing
        route = routing.route(set(available))
        self._note_rollout(name, record, route)
        statuses = tuple(replace(r.status) for _, r in sorted(record.versions.items(), key=lambda item: -item[0]))
        return ModelSnapshot(
            name=name,
            available=MappingProxyType(available),
            labels=MappingProxyType(dict(routing.labels)),
            route=route,
            statuses=statuses,
            serving_error=record.serving_error,
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
    settled = (VersionState.AVAILABLE, VersionState.END)
    return bool(model.statuses) and not any(status.state in settled for status in model.statuses)
