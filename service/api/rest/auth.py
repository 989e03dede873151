"""Optional API-key authentication: one ASGI layer in front of every route.

It wraps the fast lane, so the inference POSTs, the FastAPI control plane (status, metadata, model readiness,
``/v2``) and the OpenAPI documents all pass through it; the health probes and ``/metrics`` are exempt by setting.
WebSocket handshakes are checked like HTTP requests (none is exempt); only the lifespan scope passes unchecked.
The keys file, the keys a request presents and their check are service/api/keys.py, shared with gRPC.

No key: 401 with ``WWW-Authenticate: Bearer``; a key that matches none: 403. Both answer ``{"error": message}``,
the error shape of TF Serving REST and of the Open Inference Protocol alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.keys import INVALID, MESSAGES, MISSING, KeyFile, presented_keys
from service.codecs.json_io import error_body

HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
METRICS_PATH = "/metrics"
_STATUS = {MISSING: 401, INVALID: 403}


def protocol_of(path: str) -> str:
    """The protocol label a refusal counts under: the inference protocol a path belongs to, else "rest"."""
    if path.startswith("/v1/"):
        return "tfserving"
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    return "rest"


class ApiKeyGate:
    """ASGI middleware: lets a request through when it carries an accepted key or its path is exempt."""

    def __init__(self, app: ASGIApp, keys: KeyFile, exempt: frozenset[str], failures: Counter) -> None:
        self._app = app
        self._keys = keys
        self._exempt = exempt
        self._failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and scope["path"] in self._exempt):
            await self._app(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            # Anything else a server may one day send would pass unchecked; the ASGI spec says to raise.
            raise ValueError(f"the API-key gate does not handle ASGI scope type {kind!r}")
        refusal = self._keys.refusal(presented_keys(scope["headers"]))
        if refusal is None:
            await self._app(scope, receive, send)
            return
        self._failures.labels(refusal, protocol_of(scope["path"])).inc()
        if kind == "websocket":
            # Closing before accepting: the server refuses the handshake (uvicorn answers 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._refuse(send, refusal)

    @staticmethod
    async def _refuse(send: Send, reason: str) -> None:
        body = error_body(MESSAGES[reason])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("latin-1"))]
        if reason == MISSING:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": _STATUS[reason], "headers": headers})
        await send({"type": "http.response.body", "body": body})


def exempt_paths(health: bool, metrics: bool, metrics_paths: Iterable[str] = ()) -> frozenset[str]:
    """The paths that answer without a key, per the exempt_health and exempt_metrics settings; ``metrics_paths``
    are further paths of the metrics document (RTSERVE_PROMETHEUS_PATH), exempt as /metrics is."""
    metrics_exempt = frozenset({METRICS_PATH, *metrics_paths}) if metrics else frozenset()
    return (HEALTH_PATHS if health else frozenset()) | metrics_exempt
