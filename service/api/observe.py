"""What every inference route shares: the call it receives, the reply it gives, and the wrapper that counts, times
and shapes the outcome (error body, status mapping, X-Model-Version header)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from service.api.body import read_body
from service.api.errors import HttpError, http_status
from service.errors import ServingError
from service.metrics import Metrics

log = logging.getLogger(__name__)

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class InferenceCall:
    """An inference request, independent of the framework that received it."""

    params: Mapping[str, str]  # path parameters: model_name, and version or label when given
    headers: Mapping[str, str]  # lower-case names
    chunks: AsyncIterator[bytes]  # the body, as it arrives

    async def body(self, max_bytes: int) -> bytes:
        return await read_body(self.headers, self.chunks, max_bytes)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful inference: the body and the model version that produced it."""

    body: bytes
    model_name: str
    model_version: str
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, ready for Starlette or for raw ASGI."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


InferenceHandler = Callable[[InferenceCall], Awaitable[Reply]]


class InferenceObserver:
    """Counts, times and shapes the outcome of every inference request for one protocol."""

    def __init__(self, metrics: Metrics, protocol: str, encode_error: Callable[[str], bytes]) -> None:
        self._metrics = metrics
        self._protocol = protocol
        self._encode_error = encode_error
        self._inflight = metrics.inflight.labels(protocol)

    async def answer(self, served_model: str, work: Callable[[], Awaitable[Answer]]) -> Reply:
        """Run ``work``; ``served_model`` is the label to count failures under ("" for unknown models)."""
        started = time.perf_counter()
        self._inflight.inc()
        model, version = served_model, ""
        try:
            result = await work()
            model, version = result.model_name, result.model_version
            reply = Reply(200, result.body, result.content_type, (("x-model-version", version), *result.headers))
        except ServingError as error:
            reply = self._error(http_status(error.code), error.message, error)
        except HttpError as error:
            reply = self._error(error.status, error.message)
        except Exception:  # our fault: say so with a 500 and keep serving
            log.exception("unexpected error serving a %s request", self._protocol)
            reply = self._error(500, "internal error; see the server log")
        finally:
            self._inflight.dec()
        self._metrics.requests.labels(model, version, self._protocol, str(reply.status)).inc()
        self._metrics.request_duration.labels(model, version, self._protocol).observe(time.perf_counter() - started)
        return reply

    def _error(self, status: int, message: str, error: ServingError | None = None) -> Reply:
        retry_after = getattr(error, "retry_after_s", None)
        headers = (("retry-after", str(max(1, round(retry_after)))),) if retry_after is not None else ()
        return Reply(status, self._encode_error(message), JSON, headers)
