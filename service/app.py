"""The application factory: wires settings, repository, runtime, manager, data plane and the HTTP routes."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from service import __version__
from service.api.rest import health, tfserving, v2
from service.api.rest.auth import ApiKeyGate, KeyFile, exempt_paths
from service.api.rest.body import BodyLimits
from service.api.rest.fastlane import FastLane
from service.api.rest.observe import JSON, Telemetry
from service.api.rest.offload import Offload
from service.codecs.json_io import error_body
from service.dataplane import DataPlane
from service.manager import ModelManager
from service.observability.logs import RequestLog
from service.observability.metrics import DriftSeries, Metrics
from service.observability.tracing import NoTracing, Tracing
from service.repository.base import Repository
from service.repository.factory import open_repository
from service.runtime.base import Loader
from service.settings import AuthSettings, OtelSettings, Settings

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    """Whether the server is draining: set once on SIGTERM, read by the readiness probe."""

    _draining: threading.Event = field(default_factory=threading.Event)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        if not self.draining:
            log.info("draining: readiness is now false; in-flight requests will finish")
        self._draining.set()


@dataclass
class Components:
    """What create_app built, reachable by tests and by the CLI's signal handling through app.state."""

    settings: Settings
    metrics: Metrics
    manager: ModelManager
    dataplane: DataPlane
    lifecycle: Lifecycle

    def is_ready(self) -> bool:
        return not self.lifecycle.draining and self.manager.is_ready()


def default_loader(settings: Settings) -> Loader:
    # Imported here so that importing the app (e.g. for its OpenAPI document) does not start TensorFlow.
    from service.runtime.tensorflow import TensorFlowLoader, configure_threads

    configure_threads(*settings.tensorflow_threads())
    return TensorFlowLoader(settings.allowed_file_ops)


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
) -> FastLane | ApiKeyGate:
    """Build the ASGI app: FastAPI for the control plane behind the inference fast lane.

    The model manager starts with the app's lifespan and stops with it. ``tracing`` replaces the one
    RTSERVE_OTEL__* describes (tests pass one with an in-memory span exporter).
    """
    metrics = Metrics(registry or CollectorRegistry())
    manager = ModelManager(
        settings,
        repository or open_repository(settings.repository, settings.s3),
        loader or default_loader(settings),
        metrics,
    )
    dataplane = DataPlane(manager, settings.max_tensor_elements, settings.request_timeout_s)
    components = Components(settings, metrics, manager, dataplane, Lifecycle())
    metrics.ready.set_function(lambda: float(components.is_ready()))
    metrics.drift.bind(lambda: drift_series(manager))
    telemetry = Telemetry(
        RequestLog(settings.log_requests, settings.log_payload_sample_rate, settings.log_payload_max_bytes),
        tracing or build_tracing(settings.otel),
    )

    offload = Offload.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            manager.stop()  # drains every version's batcher
            offload.close()
            telemetry.tracing.shutdown()  # exports the spans still pending

    app = FastAPI(
        title="rtserve",
        version=__version__,
        summary="Real-time TensorFlow model serving: TF Serving REST and the Open Inference Protocol",
        lifespan=lifespan,
    )
    app.state.components = components
    app.include_router(health.build_router(components.is_ready))
    limits = BodyLimits(settings.max_body_bytes, settings.body_timeout_s)
    v2_router, v2_inference = v2.build_router(dataplane, metrics, limits, telemetry, offload)
    tf_router, tf_inference = tfserving.build_router(dataplane, metrics, limits, telemetry, offload)
    app.include_router(v2_router)
    app.include_router(tf_router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        # Unknown paths and methods answer in the shape both protocols use: {"error": message}.
        return Response(error_body(str(error.detail)), error.status_code, media_type=JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        # Where and what, never the value sent: a request's own data stays out of its error body.
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return Response(error_body(f"invalid request: {where}: {first.get('msg', 'invalid')}"), 400, media_type=JSON)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, error: Exception) -> Response:
        # Starlette logs the traceback; the client gets the protocols' error shape, not a plain-text page.
        return Response(error_body("internal error; see the server log"), 500, media_type=JSON)

    @app.get("/metrics", tags=["Monitoring"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return with_authentication(FastLane(app, v2_inference + tf_inference), settings.auth, metrics)


def with_authentication(lane: FastLane, auth: AuthSettings, metrics: Metrics) -> FastLane | ApiKeyGate:
    """The lane behind an API-key gate when a keys file is configured, else the lane itself (no cost)."""
    if auth.keys_file is None:
        return lane
    keys = KeyFile(Path(auth.keys_file))
    exempt = exempt_paths(auth.exempt_health, auth.exempt_metrics)
    return ApiKeyGate(lane, lane.state, keys, exempt, metrics.auth_failures)


def drift_series(manager: ModelManager) -> Iterator[DriftSeries]:
    """The drift reading of every AVAILABLE version that has a profile, for rtserve_drift_* at scrape time."""
    for model in manager.snapshot().values():
        for loaded in model.available.values():
            if loaded.drift is not None:
                samples, psi = loaded.drift.reading()
                yield DriftSeries(model.name, loaded.version_label, samples, psi)
