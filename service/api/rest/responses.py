"""The REST answers' two shapes, each built in one place: a JSON document, and an error in the protocols' shape.

Both protocols write errors as ``{"error": message}`` (``json_io.error_body``); ``error_answer`` is the one mapping
from an error to its HTTP status, body and headers, for the fast lane's replies and FastAPI's handler alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from service.api.errors import HttpError, http_status
from service.codecs.json_io import dumps, error_body
from service.errors import ServingError

JSON = "application/json"


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def plain_error(status: int, message: str) -> ErrorAnswer:
    """An answer about no domain error: an unknown path, a client gone, our own bug."""
    return ErrorAnswer(status, error_body(message))


def error_answer(error: ServingError | HttpError) -> ErrorAnswer:
    if isinstance(error, HttpError):
        return ErrorAnswer(error.status, error_body(error.message), error.headers)
    retry = error.retry_after_s
    headers = (("retry-after", str(max(1, round(retry)))),) if retry is not None else ()
    return ErrorAnswer(http_status(error.code), error_body(error.message), headers)


def error_response(answer: ErrorAnswer) -> Response:
    return Response(answer.body, answer.status, headers=dict(answer.headers), media_type=JSON)


def json_response(document: object, status: int = 200) -> Response:
    return Response(dumps(document), status, media_type=JSON)
