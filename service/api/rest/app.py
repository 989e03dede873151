"""The REST front end as one ASGI app: FastAPI for the control plane behind the inference fast lane, behind the
API-key gate when a keys file is configured. The wiring (service/app.py) hands it what it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from service import __version__
from service.api.errors import HttpError
from service.api.keys import KeyFile
from service.api.offload import Offload
from service.api.rest import health, tfserving, v2
from service.api.rest.auth import ApiKeyGate, exempt_paths
from service.api.rest.body import BodyLimits
from service.api.rest.fastlane import FastLane
from service.api.rest.responses import error_answer, error_response, plain_error
from service.dataplane import DataPlane
from service.errors import ServingError
from service.observability.metrics import Metrics
from service.observability.telemetry import Telemetry
from service.settings import AuthSettings, Settings


class Backend(Protocol):
    """What the REST front end serves: the wiring's components (service/app.py), seen from here."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def dataplane(self) -> DataPlane: ...

    def is_ready(self) -> bool: ...

    def start(self) -> None:
        """Begin serving (the model manager starts loading); called when the ASGI lifespan starts."""
        ...

    def stop(self) -> None:
        """Stop and drain every version's batcher; called when the ASGI lifespan ends."""
        ...


@dataclass(frozen=True)
class RestApp:
    """The ASGI app a server runs, and the FastAPI app inside it (for its OpenAPI document)."""

    asgi: ASGIApp
    fastapi: FastAPI


def build_rest_app(backend: Backend, telemetry: Telemetry, offload: Offload | None = None) -> RestApp:
    """The REST app over ``backend``; its lifespan starts and stops the backend, the codec workers (``offload``,
    shared with the gRPC front end; its own when not given) and tracing."""
    settings, metrics, tracing = backend.settings, backend.metrics, telemetry.tracing
    offload = offload or Offload.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backend.start()
        try:
            yield
        finally:
            backend.stop()  # drains every version's batcher
            offload.close()
            tracing.shutdown()  # exports the spans still pending

    app = FastAPI(
        title="rtserve",
        version=__version__,
        summary="Real-time TensorFlow model serving: TF Serving REST and the Open Inference Protocol",
        lifespan=lifespan,
    )
    app.include_router(health.build_router(backend.is_ready))
    limits = BodyLimits(settings.max_body_bytes, settings.body_timeout_s)
    v2_router, v2_inference = v2.build_router(backend.dataplane, metrics, limits, telemetry, offload)
    tf_router, tf_inference = tfserving.build_router(backend.dataplane, metrics, limits, telemetry, offload)
    app.include_router(v2_router)
    app.include_router(tf_router)
    add_error_handlers(app)

    async def prometheus_metrics(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for path in metrics_paths(settings):
        app.get(path, tags=["Monitoring"], summary="Prometheus metrics", response_class=Response)(prometheus_metrics)

    lane = FastLane(app, v2_inference + tf_inference)
    return RestApp(with_authentication(lane, settings.auth, metrics, metrics_paths(settings)), app)


def metrics_paths(settings: Settings) -> tuple[str, ...]:
    """Where the Prometheus document answers: /metrics, and RTSERVE_PROMETHEUS_PATH (TF Serving's monitoring
    config) when it names another path."""
    extra = settings.prometheus_path
    return ("/metrics",) if extra in ("", "/metrics") else ("/metrics", extra)


def add_error_handlers(app: FastAPI) -> None:
    """Every error a control-plane route raises becomes an answer here (the fast lane's through the same
    ``error_answer``), in the shape both protocols use: {"error": message}."""

    @app.exception_handler(ServingError)
    @app.exception_handler(HttpError)
    async def domain_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, ServingError | HttpError)
        return error_response(error_answer(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        # Unknown paths and methods.
        return error_response(plain_error(error.status_code, str(error.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        # Where and what, never the value sent: a request's own data stays out of its error body.
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(plain_error(400, f"invalid request: {where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, error: Exception) -> Response:
        # Starlette logs the traceback; the client gets the protocols' error shape, not a plain-text page.
        return error_response(plain_error(500, "internal error; see the server log"))


def with_authentication(
    lane: FastLane, auth: AuthSettings, metrics: Metrics, metrics_at: Sequence[str] = ()
) -> ASGIApp:
    """The lane behind an API-key gate when a keys file is configured, else the lane itself (no cost)."""
    if auth.keys_file is None:
        return lane
    keys = KeyFile(Path(auth.keys_file))
    exempt = exempt_paths(auth.exempt_health, auth.exempt_metrics, metrics_at)
    return ApiKeyGate(lane, keys, exempt, metrics.auth_failures)
