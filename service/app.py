"""The application factory: wires settings, repository, runtime, manager, data plane and the HTTP routes."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from service import __version__
from service.api import health, tfserving, v2
from service.api.fastlane import FastLane
from service.api.observe import JSON
from service.dataplane import DataPlane
from service.manager import ModelManager
from service.metrics import Metrics
from service.repository.base import Repository
from service.repository.factory import open_repository
from service.runtime.base import Loader
from service.settings import Settings

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
    return TensorFlowLoader()


def create_app(
    settings: Settings,
    *,
    repository: Repository | None = None,
    loader: Loader | None = None,
    registry: CollectorRegistry | None = None,
) -> FastLane:
    """Build the ASGI app: FastAPI for the control plane behind the inference fast lane.

    The model manager starts with the app's lifespan and stops with it.
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            manager.stop()  # drains every version's batcher

    app = FastAPI(
        title="rtserve",
        version=__version__,
        summary="Real-time TensorFlow model serving: TF Serving REST and the Open Inference Protocol",
        lifespan=lifespan,
    )
    app.state.components = components
    app.include_router(health.build_router(components.is_ready))
    v2_router, v2_inference = v2.build_router(dataplane, metrics, settings.max_body_bytes)
    tf_router, tf_inference = tfserving.build_router(dataplane, metrics, settings.max_body_bytes)
    app.include_router(v2_router)
    app.include_router(tf_router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        # Unknown paths and methods answer in the shape both protocols use: {"error": message}.
        return Response(orjson.dumps({"error": str(error.detail)}), error.status_code, media_type=JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        return Response(orjson.dumps({"error": f"invalid request: {error.errors()[:1]}"}), 400, media_type=JSON)

    @app.get("/metrics", tags=["Monitoring"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return FastLane(app, v2_inference + tf_inference)
