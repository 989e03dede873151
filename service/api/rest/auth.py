"""Optional API-key authentication: one ASGI layer in front of every route.

It wraps the fast lane, so the inference POSTs, the FastAPI control plane (status, metadata, model readiness,
``/v2``) and the OpenAPI documents all pass through it; the health probes and ``/metrics`` are exempt by setting.
WebSocket handshakes are checked like HTTP requests (none is exempt); only the lifespan scope passes unchecked.
Keys come from a file (a mounted Kubernetes Secret), one per line, and are picked up within a second of a change
(a Secret update swaps the file behind a symlink) without a restart.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key: 401 with
``WWW-Authenticate: Bearer``; a key that matches none: 403. Both answer ``{"error": message}``, the error shape of
TF Serving REST and of the Open Inference Protocol alike.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from service.codecs.json_io import error_body

log = logging.getLogger(__name__)

KEYS_FILE_SETTING = "RTSERVE_AUTH__KEYS_FILE"
HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
METRICS_PATH = "/metrics"
# How often the keys file is looked at: a stat per second at most, never one per request.
RECHECK_S = 1.0
MISSING = "missing_key"
INVALID = "invalid_key"
_MESSAGES = {
    MISSING: "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    INVALID: "the API key is not valid",
}
_STATUS = {MISSING: 401, INVALID: 403}


def parse_keys(text: str) -> list[str]:
    """The keys of a keys file: one per line, surrounding blanks stripped, '#' comments and blank lines skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _digest(key: bytes) -> bytes:
    # Comparing fixed-length digests keeps a key's length out of the timing as well.
    return hashlib.sha256(key).digest()


@dataclass(frozen=True)
class _Snapshot:
    identity: tuple[int, int, int, int]  # device, inode, mtime_ns, size: changes when a Secret update lands
    digests: tuple[bytes, ...]


class KeyFile:
    """The accepted keys, read from ``path`` and re-read when the file changes (checked at most once a second).

    The first read must succeed (a server told to authenticate must not start open). Later failures keep the
    last good keys and are logged.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._checked_at = clock()
        try:
            self._snapshot = self._read()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{KEYS_FILE_SETTING}: cannot read {path}: {error}") from error

    def digests(self) -> tuple[bytes, ...]:
        now = self._clock()
        if now - self._checked_at >= RECHECK_S:
            self._checked_at = now
            self._refresh()
        return self._snapshot.digests

    def _refresh(self) -> None:
        try:
            if self._identity() != self._snapshot.identity:
                self._snapshot = self._read()
                log.info("API keys reloaded from %s (%d keys)", self._path, len(self._snapshot.digests))
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot re-read the API keys file %s, keeping the last keys: %s", self._path, error)

    def _identity(self) -> tuple[int, int, int, int]:
        stat = self._path.stat()
        return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> _Snapshot:
        identity = self._identity()
        keys = parse_keys(self._path.read_text(encoding="utf-8"))
        if not keys:
            log.warning("the API keys file %s holds no key: every request that needs one is refused", self._path)
        return _Snapshot(identity, tuple(_digest(key.encode("utf-8")) for key in keys))


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request carries, from ``Authorization: Bearer`` and ``X-API-Key`` (ASGI lower-case names)."""
    keys: list[bytes] = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"x-api-key" and value.strip():
            keys.append(value.strip())
    return keys


def is_accepted(candidate: bytes, digests: Iterable[bytes]) -> bool:
    """Constant time in the candidate: it is compared with every key, never stopping at a match or a mismatch."""
    digest = _digest(candidate)
    accepted = False
    for known in digests:
        accepted |= hmac.compare_digest(digest, known)
    return accepted


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
        refusal = self._refusal(scope["headers"])
        if refusal is None:
            await self._app(scope, receive, send)
            return
        self._failures.labels(refusal).inc()
        if kind == "websocket":
            # Closing before accepting: the server refuses the handshake (uvicorn answers 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._refuse(send, refusal)

    def _refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        candidates = presented_keys(headers)
        if not candidates:
            return MISSING
        digests = self._keys.digests()
        # Every candidate is checked (no short-circuit), so timing says nothing about which header held a key.
        accepted = [is_accepted(candidate, digests) for candidate in candidates]
        return None if any(accepted) else INVALID

    @staticmethod
    async def _refuse(send: Send, reason: str) -> None:
        body = error_body(_MESSAGES[reason])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("latin-1"))]
        if reason == MISSING:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": _STATUS[reason], "headers": headers})
        await send({"type": "http.response.body", "body": body})


def exempt_paths(health: bool, metrics: bool) -> frozenset[str]:
    """The paths that answer without a key, per the exempt_health and exempt_metrics settings."""
    return (HEALTH_PATHS if health else frozenset()) | (frozenset({METRICS_PATH}) if metrics else frozenset())
