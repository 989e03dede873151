"""The wiring: builds settings' components once (repository, runtime, manager, data plane, metrics, tracing) and
hands them to the front ends. No web framework is imported here; the REST app is built in service/api/rest/app.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from service.api.grpc.app import build_grpc_app
from service.api.grpc.server import GrpcDeps, GrpcFrontEnd
from service.api.offload import Offload
from service.api.rest.app import RestApp, build_rest_app
from service.compat.config_files import parse_model_server_config, read_model_server_config
from service.compat.watcher import ConfigFileWatcher
from service.dataplane import DataPlane
from service.manager import ModelManager, ModelSnapshot
from service.observability.logs import RequestLog
from service.observability.metrics import DriftSeries, Metrics
from service.observability.startup import SETUP, Startup
from service.observability.telemetry import Telemetry
from service.observability.tracing import NoTracing, Tracing
from service.repository.base import Repository
from service.repository.factory import open_repository
from service.runtime.base import Loader
from service.settings import OtelSettings, Settings

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    """Whether the server is draining: set once on SIGTERM, read by the readiness probe."""

    _draining: threading.Event = field(default_factory=threading.Event)
    _listeners: list[Callable[[], None]] = field(default_factory=list)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def on_draining(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when draining starts (in the signal handler's thread: it must only hand over)."""
        self._listeners.append(callback)

    def start_draining(self) -> None:
        if not self.draining:
            log.info("draining: readiness is now false; in-flight requests will finish")
        self._draining.set()
        for callback in self._listeners:
            callback()


@dataclass
class Components:
    """What create_app built: the parts every front end serves, and the CLI's signal handling reaches."""

    settings: Settings
    metrics: Metrics
    manager: ModelManager
    dataplane: DataPlane
    lifecycle: Lifecycle
    config_file: ConfigFileWatcher | None = None  # RTSERVE_MODEL_CONFIG_FILE re-read while serving
    startup: Startup | None = None  # the process's cold start, closed at the first ready

    def is_ready(self) -> bool:
        return not self.lifecycle.draining and self.manager.is_ready()

    def start(self) -> None:
        if self.startup is not None:
            self.startup.mark(SETUP)
        self.manager.start()
        if self.config_file is not None:
            self.config_file.start()

    def stop(self) -> None:
        if self.config_file is not None:
            self.config_file.stop()  # no new model set while the versions drain
        self.manager.stop()  # drains every version's batcher


@dataclass(frozen=True)
class App:
    """What create_app returns: the front ends (gRPC is None when RTSERVE_GRPC_PORT is 0), and the components
    behind them."""

    rest: RestApp
    components: Components
    grpc: GrpcFrontEnd | None = None


def default_loader(settings: Settings) -> Loader:
    # Imported here so that importing the app (e.g. for its OpenAPI document) does not start TensorFlow.
    from service.runtime.tensorflow import TensorFlowLoader, configure_threads

    configure_threads(*settings.tensorflow_threads())
    return TensorFlowLoader(settings.allowed_file_ops, runner=settings.signature_runner)


def build_tracing(settings: OtelSettings, exporter: Any | None = None) -> Tracing:
    """OpenTelemetry tracing when enabled (or when a test hands in its own span exporter), else NoTracing."""
    if not settings.enabled and exporter is None:
        return NoTracing()
    # Imported here so that a server without tracing never imports OpenTelemetry.
    from service.observability.otel import OtelTracing

    return OtelTracing(settings, exporter)


def create_app(
    settings: Settings,
    *,
    repository: Repository | None = None,
    loader: Loader | None = None,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
    startup: Startup | None = None,
) -> App:
    """Build the components and the front ends over them.

    The model manager starts with the ASGI app's lifespan and stops with it. ``tracing`` replaces the one
    RTSERVE_OTEL__* describes (tests pass one with an in-memory span exporter). ``startup`` is the serve
    command's record of the process's start (one is begun here without it).
    """
    startup = startup or Startup.now()
    metrics = Metrics(registry or CollectorRegistry())
    if settings.model_config_file and settings.model_config_list is None:
        settings = settings.model_copy(
            update={"model_config_list": read_model_server_config(settings.model_config_file)}
        )
    manager = ModelManager(
        settings,
        repository or open_repository(settings.repository, settings.s3),
        loader or default_loader(settings),
        metrics,
        on_first_ready=lambda snapshot: startup.ready(metrics, version_loads(snapshot)),
    )
    dataplane = DataPlane(manager, settings.max_tensor_elements, settings.request_timeout_s)
    components = Components(
        settings, metrics, manager, dataplane, Lifecycle(), config_file_watcher(settings, manager, metrics), startup
    )
    metrics.ready.set_function(lambda: float(components.is_ready()))
    metrics.drift.bind(lambda: drift_series(manager))
    telemetry = Telemetry(
        RequestLog(settings.log_requests, settings.log_payload_sample_rate, settings.log_payload_max_bytes),
        tracing or build_tracing(settings.otel),
    )
    # One codec worker pool for both front ends: RTSERVE_CODEC_WORKERS bounds large bodies of either protocol.
    offload = Offload.from_settings(settings)
    rest = build_rest_app(components, telemetry, offload)
    grpc = None
    if settings.grpc_port:
        deps = GrpcDeps(
            settings, dataplane, metrics, telemetry, components.is_ready, components.lifecycle.on_draining, offload
        )
        grpc = build_grpc_app(deps)
    return App(rest, components, grpc)


def config_file_watcher(settings: Settings, manager: ModelManager, metrics: Metrics) -> ConfigFileWatcher | None:
    """The re-reading of RTSERVE_MODEL_CONFIG_FILE, when it is to be re-read."""
    path = settings.model_config_file
    if not path or not settings.model_config_file_poll_wait_s:
        return None
    return ConfigFileWatcher(
        read=lambda: Path(path).read_text(encoding="utf-8"),
        parse=lambda text: parse_model_server_config(text, f"model config file {path!r}"),
        apply=manager.apply_model_set,
        failed=metrics.model_config_reloads.labels("failure").inc,
        interval_s=settings.model_config_file_poll_wait_s,
        current=settings.model_config_list,
        applied=lambda: manager.model_set_status().applied,
    )


def drift_series(manager: ModelManager) -> Iterator[DriftSeries]:
    """The drift reading of every AVAILABLE version that has a profile, for rtserve_drift_* at scrape time."""
    for model in manager.snapshot().values():
        for loaded in model.available.values():
            if loaded.drift is not None:
                samples, psi = loaded.drift.reading()
                yield DriftSeries(model.name, loaded.version_label, samples, psi)


def version_loads(snapshot: Mapping[str, ModelSnapshot]) -> Iterator[tuple[str, str, Mapping[str, float]]]:
    """Each AVAILABLE version's load phases, for the first-ready log line."""
    for model in snapshot.values():
        for loaded in model.available.values():
            yield model.name, loaded.version_label, loaded.phases
