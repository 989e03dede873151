"""One wrapper every inference route goes through: error shape, status mapping, metrics, version header."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from service.api.errors import HttpError, http_status
from service.errors import ServingError
from service.metrics import Metrics

log = logging.getLogger(__name__)

JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """A successful inference: the body and the model version that produced it."""

    body: bytes
    model_name: str
    model_version: str
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class InferenceObserver:
    """Counts, times and shapes the outcome of every inference request for one protocol."""

    def __init__(self, metrics: Metrics, protocol: str, encode_error: Callable[[str], bytes]) -> None:
        self._metrics = metrics
        self._protocol = protocol
        self._encode_error = encode_error
        self._inflight = metrics.inflight.labels(protocol)

    async def answer(self, served_model: str, work: Callable[[], Awaitable[Answer]]) -> Response:
        """Run ``work``; ``served_model`` is the label to count failures under ("" for unknown models)."""
        started = time.perf_counter()
        self._inflight.inc()
        model, version = served_model, ""
        try:
            result = await work()
            model, version = result.model_name, result.model_version
            headers = {"X-Model-Version": version, **dict(result.headers)}
            response = Response(result.body, 200, headers=headers, media_type=result.content_type)
        except ServingError as error:
            response = self._error(http_status(error.code), error.message)
        except HttpError as error:
            response = self._error(error.status, error.message)
        except Exception:  # our fault: say so with a 500 and keep serving
            log.exception("unexpected error serving a %s request", self._protocol)
            response = self._error(500, "internal error; see the server log")
        finally:
            self._inflight.dec()
        self._metrics.requests.labels(model, version, self._protocol, str(response.status_code)).inc()
        self._metrics.request_duration.labels(model, version, self._protocol).observe(time.perf_counter() - started)
        return response

    def _error(self, status: int, message: str) -> Response:
        return Response(self._encode_error(message), status, media_type=JSON)
