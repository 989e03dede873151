"""Logging: one handler on stdout, JSON lines or text; request ids; the per-request log line.

Every record may carry ``fields`` (a dict, passed as ``extra={"fields": ...}``): the JSON formatter puts them at
the top level of the line, the text formatter appends them as ``key=value``.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

REQUEST_ID_HEADER = "x-request-id"
# Printable ASCII without spaces, bounded: a request id is echoed in a header and written to every log line.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
ACCESS_LOGGER = "rtserve.access"


class RequestIds:
    """Request ids: the caller's X-Request-Id when it is safe to echo and log, else a new one.

    A new id is a random per-process prefix and a counter: unique across a fleet, and no system call per request
    (a random id per request meant a getrandom call on the event loop, which also handed the GIL to the
    inference thread mid-request).
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def of(self, headers: Mapping[str, str]) -> str:
        given = headers.get(REQUEST_ID_HEADER)
        if given is not None and _REQUEST_ID.fullmatch(given):
            return given
        return f"{self._prefix}{next(self._counter):016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's fields, and any exception."""

    def __init__(self) -> None:
        super().__init__()
        # Formatting the date is most of a line's cost; it changes once a second.
        self._second = -1
        self._prefix = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {key}={value}" for key, value in fields.items())
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """rtserve's own root handler, so that configuring again replaces it and leaves others' handlers alone."""


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """One handler on the root logger, on ``stream`` (stdout by default), in the chosen format."""
    handler = _Handler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RequestLog:
    """Writes the one line per inference request: id, model, version, protocol, status, latency; the body only
    for a sampled share of requests (``payload_sample_rate``), cut at ``payload_max_bytes``."""

    def __init__(
        self,
        enabled: bool = True,
        payload_sample_rate: float = 0.0,
        payload_max_bytes: int = 4096,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._enabled = enabled
        self._payload_rate = payload_sample_rate
        self._payload_max = payload_max_bytes
        self._draw = draw

    def emit(
        self,
        request: str,
        protocol: str,
        model: str,
        version: str,
        status: int,
        seconds: float,
        body: bytes | None,
        grpc_call: tuple[str, str] | None = None,
    ) -> None:
        """``grpc_call``: a gRPC call's method and status name (``status`` is then its HTTP equivalent)."""
        if not self._enabled or not self._logger.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "request_id": request,
            "model": model,
            "version": version,
            "protocol": protocol,
            "status": status,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        if grpc_call is not None:
            fields["grpc_method"], fields["grpc_status"] = grpc_call
        if body is not None and self._payload_rate > 0 and self._draw() < self._payload_rate:
            fields["payload"] = body[: self._payload_max].decode("utf-8", "backslashreplace")
            fields["payload_truncated"] = len(body) > self._payload_max
        # A record made directly skips logging's search of the call stack for the caller, a third of the cost.
        logger = self._logger
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields})
        )
