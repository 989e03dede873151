"""Server liveness and readiness (Open Inference Protocol paths, also the Kubernetes probes).

The protocol says a 200 means true and a 4xx means false; Kubernetes treats both as intended.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from starlette.responses import Response

from service.api.rest.responses import json_response

NOT_READY = 400


def build_router(is_ready: Callable[[], bool]) -> APIRouter:
    router = APIRouter(tags=["Health"])

    @router.get("/v2/health/live", summary="Server live", response_class=Response)
    async def live() -> Response:
        """200 while the event loop answers. No dependency checks: a slow S3 must never restart pods."""
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="Server ready", response_class=Response)
    async def ready() -> Response:
        """200 when every configured model has an AVAILABLE version and the server is not draining."""
        state = is_ready()
        return json_response({"ready": state}, 200 if state else NOT_READY)

    return router
