"""Prometheus metric definitions on an injected registry (DESIGN.md section 7).

Names carry the ``rtserve_`` prefix and their unit; labels are ``model_name`` and ``model_version`` everywhere,
plus ``protocol`` and ``code`` where they apply. Requests for models that do not exist are counted under
``model_name=""`` so that request data cannot grow the label space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.states import VersionState

MODEL_LABELS = ("model_name", "model_version")

# Buckets from 250 microseconds to 10 seconds: the hot path lives at the bottom, loads at the top.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Queue waits start far below a model call: a busy version hands work over in tens of microseconds.
QUEUE_WAIT_BUCKETS = (0.00005, 0.0001, *LATENCY_BUCKETS)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STATES = tuple(VersionState)  # every state has a series per version, exactly one of them 1

# Names read by more than one module (tools/fleet.py reads a replica's /metrics by these), defined once here.
MODEL_LOADS = "rtserve_model_loads_total"
VERSION_STATE = "rtserve_model_version_state"
DEFAULT_VERSION = "rtserve_model_default_version"
PENDING_DEFAULT_VERSION = "rtserve_model_pending_default_version"
ROLLOUT_BLOCKED = "rtserve_model_rollout_blocked"
# What a load attempt goes through, in order (service/manager/harness.py LoadSteps): rtserve_model_load_phase_seconds.
LOAD_PHASES = ("download", "load", "warm_up", "drift", "batch_safety")


class Metrics:
    """Every metric rtserve exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rtserve_requests_total",
            "Inference requests answered, by model, version, protocol and HTTP status code.",
            [*MODEL_LABELS, "protocol", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "rtserve_request_duration_seconds",
            "Time from receiving an inference request to its answer, including queueing and decoding.",
            [*MODEL_LABELS, "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "rtserve_inference_duration_seconds",
            "Time TensorFlow spent running one batch of a model version.",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "rtserve_batch_size",
            "Requests coalesced into one model call (requests, not rows).",
            MODEL_LABELS,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "rtserve_queue_depth",
            "Requests waiting for a model version's inference thread.",
            MODEL_LABELS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "rtserve_queue_wait_seconds",
            "Time a request waited in a model version's queue before its model call started.",
            MODEL_LABELS,
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge(
            "rtserve_inflight_requests",
            "Inference requests being processed right now (the HPA's custom metric).",
            ["protocol"],
            registry=registry,
        )
        self.model_loads = Counter(
            MODEL_LOADS,
            "Attempts to load a model version, by outcome (success or failure).",
            [*MODEL_LABELS, "outcome"],
            registry=registry,
        )
        self.model_load_duration = Histogram(
            "rtserve_model_load_duration_seconds",
            "Time to download, load and warm up a model version.",
            MODEL_LABELS,
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.model_load_phase = Gauge(
            "rtserve_model_load_phase_seconds",
            "Seconds the version's last successful load spent in each phase: download (to the cache), load "
            "(TensorFlow reads the SavedModel), warm_up, drift (the reference profile), batch_safety (which "
            "signatures may merge requests, and the batcher).",
            [*MODEL_LABELS, "phase"],
            registry=registry,
        )
        self.version_state = Gauge(
            VERSION_STATE,
            "1 for the state each known model version is in (TF Serving's states).",
            [*MODEL_LABELS, "state"],
            registry=registry,
        )
        self.default_version = Gauge(
            DEFAULT_VERSION,
            "The version that requests without a version or label go to.",
            ["model_name"],
            registry=registry,
        )
        self.pending_default_version = Gauge(
            PENDING_DEFAULT_VERSION,
            "The version the default switches to at serving.json's activate_at; 0 when no switch is pending.",
            ["model_name"],
            registry=registry,
        )
        self.rollout_blocked = Gauge(
            ROLLOUT_BLOCKED,
            "1 while serving.json's activate_at has passed but the new default is not AVAILABLE on this replica "
            "(the previous default keeps serving).",
            ["model_name"],
            registry=registry,
        )
        self.repository_polls = Counter(
            "rtserve_repository_polls_total",
            "Polls of the model repository, by outcome (success or error).",
            ["outcome"],
            registry=registry,
        )
        self.repository_poll_errors = Counter(
            "rtserve_repository_poll_errors_total",
            "Polls of the model repository that failed (unreachable, denied, malformed listing).",
            registry=registry,
        )
        self.repository_last_success = Gauge(
            "rtserve_repository_last_success_timestamp_seconds",
            "Unix time of the last successful repository poll.",
            registry=registry,
        )

        self.auth_failures = Counter(
            "rtserve_auth_failures_total",
            "Requests refused by API-key authentication, by reason (missing_key: 401 / UNAUTHENTICATED, invalid_key: "
            "403 / PERMISSION_DENIED) and protocol (tfserving, v2, rest; grpc-tfserving, grpc-v2, grpc).",
            ["reason", "protocol"],
            registry=registry,
        )

        # Observability (docs/operations.md "Metrics", "Drift"): readiness as a series, so that alerts and the
        # dashboard see it without kube-state-metrics; queue capacity, so saturation is a ratio; drift scores.
        self.ready = Gauge(
            "rtserve_ready",
            "1 when this replica is ready (GET /v2/health/ready answers 200), 0 when not (loading, draining).",
            registry=registry,
        )
        self.queue_capacity = Gauge(
            "rtserve_queue_capacity",
            "Requests a model version's queue holds before it answers 503 (the batching max_queue).",
            MODEL_LABELS,
            registry=registry,
        )
        self.drift = DriftCollector()
        registry.register(self.drift)

        # Model lifecycle (docs/reliability.md "Model lifecycle never freezes").
        self.loads_abandoned = Gauge(
            "rtserve_model_loads_abandoned",
            "Loads failed at RTSERVE_LOAD_TIMEOUT_S whose thread has not returned yet (TensorFlow did not stop).",
            registry=registry,
        )
        self.serving_config_rejections = Counter(
            "rtserve_serving_config_rejections_total",
            "serving.json files that could not be applied and were ignored (each distinct file once).",
            ["model_name"],
            registry=registry,
        )
        self.serving_config_invalid = Gauge(
            "rtserve_serving_config_invalid",
            "1 while a model's serving.json cannot be applied (the last good routing serves), else 0.",
            ["model_name"],
            registry=registry,
        )

        # Batching (docs/operations.md "Batching"): which signatures merge requests, and requests nobody waited for.
        self.batching_merged = Gauge(
            "rtserve_batching_merged",
            "1 when requests to a signature share model calls, 0 when each runs alone; basis says why (safe, "
            "unsafe, check_failed, forced_on, forced_off, disabled, no_batch_dimension).",
            [*MODEL_LABELS, "signature", "basis"],
            registry=registry,
        )
        self.requests_dropped = Counter(
            "rtserve_requests_dropped",
            "Queued requests removed without running, by reason (cancelled: the client went away; deadline: "
            "its deadline passed while it waited).",
            [*MODEL_LABELS, "reason"],
            registry=registry,
        )

        # The model set (docs/operations.md "Model set"): lists applied while serving, and those refused.
        self.model_config_reloads = Counter(
            "rtserve_model_config_reloads_total",
            "Model sets offered while serving (a new model_config_list), by outcome: success (applied) or failure "
            "(refused, the current set keeps serving; the reason is in the log and the model-set status).",
            ["outcome"],
            registry=registry,
        )

        # Cold start (docs/operations.md "Cold start"): set once, at the process's first ready.
        self.startup = Gauge(
            "rtserve_startup_seconds",
            "Seconds from the process's exec to its first ready (what a startup probe and a scale-up wait for).",
            registry=registry,
        )
        self.startup_phase = Gauge(
            "rtserve_startup_phase_seconds",
            "rtserve_startup_seconds split: python_start, tensorflow_import, imports, setup, models (the manager's "
            "start to the first ready: polls, downloads, loads and warm-ups).",
            ["phase"],
            registry=registry,
        )

    def forget_versions(self, model: str, versions: Iterable[int]) -> None:
        """Remove the series of versions no longer known (their model left the set or moved), so /metrics drops them."""
        for version in map(str, versions):
            for state in STATES:
                _remove(self.version_state, model, version, state.value)
            for outcome in ("success", "failure"):
                _remove(self.model_loads, model, version, outcome)
            for phase in LOAD_PHASES:
                _remove(self.model_load_phase, model, version, phase)
            for metric in (self.model_load_duration, self.queue_depth, self.queue_capacity):
                _remove(metric, model, version)

    def forget_model(self, model: str, versions: Iterable[int]) -> None:
        """Remove every series of a model no longer served: its versions' and its own."""
        self.forget_versions(model, versions)
        model_level = (
            self.default_version,
            self.pending_default_version,
            self.rollout_blocked,
            self.serving_config_invalid,
            self.serving_config_rejections,
        )
        for metric in model_level:
            _remove(metric, model)

    def set_version_state(self, model: str, version: int, state: VersionState) -> None:
        """Make exactly one of the version's state series 1 (TF Serving reports unloaded versions as END)."""
        for candidate in STATES:
            self.version_state.labels(model, str(version), candidate.value).set(1.0 if candidate is state else 0.0)


@dataclass(frozen=True)
class DriftSeries:
    """One loaded version's drift reading: rows in its window, and the PSI per feature (None: too few rows)."""

    model: str
    version: str
    samples: int
    psi: Mapping[str, float] | None


class DriftCollector(Collector):
    """rtserve_drift_psi and rtserve_drift_window_samples, read from the loaded versions at scrape time.

    The scores are computed only when Prometheus asks, and a version's series go away with the version.
    """

    def __init__(self) -> None:
        self._source: Callable[[], Iterable[DriftSeries]] = tuple

    def bind(self, source: Callable[[], Iterable[DriftSeries]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "rtserve_drift_psi",
            "Population stability index of a feature's live inputs (the sliding window) against the version's "
            "reference profile; exported once the window holds RTSERVE_DRIFT__MIN_SAMPLES rows.",
            labels=[*MODEL_LABELS, "feature"],
        )
        samples = GaugeMetricFamily(
            "rtserve_drift_window_samples",
            "Rows of live inputs in a profiled model version's drift window.",
            labels=list(MODEL_LABELS),
        )
        for series in self._source():
            samples.add_metric([series.model, series.version], series.samples)
            for feature, score in (series.psi or {}).items():
                psi.add_metric([series.model, series.version, feature], score)
        yield psi
        yield samples


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    """Remove one labelled series; one that was never set is not an error."""
    with suppress(KeyError):
        metric.remove(*labels)
