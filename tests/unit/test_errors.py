"""Canonical codes -> HTTP, TF Serving's table code for code, and the error a runtime's status code becomes."""

from __future__ import annotations

from typing import cast

import pytest

from service.api.errors import HTTP_STATUS, http_status
from service.dataplane import DataPlane
from service.errors import Code, InvalidArgument, ModelError, ResourceExhausted, ServingError, error_for_code
from service.manager import ModelManager

# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode, written out again so that a change of the
# table in service/api/errors.py has to be a change of this test too.
TF_SERVING = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_every_code_maps_as_tf_serving_maps_it() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == TF_SERVING
    assert set(HTTP_STATUS) == set(Code)


@pytest.mark.parametrize("code", [code for code in Code if code is not Code.OK])
def test_a_runtime_status_code_keeps_its_http_status(code: Code) -> None:
    error = error_for_code(code, "the model said no")
    assert isinstance(error, ServingError)
    assert (error.code, error.message) == (code, "the model said no")
    assert http_status(error.code) == TF_SERVING[code.name]


def test_codes_with_a_class_get_it() -> None:
    assert type(error_for_code(Code.RESOURCE_EXHAUSTED, "oom")) is ResourceExhausted
    assert type(error_for_code(Code.INVALID_ARGUMENT, "bad")) is InvalidArgument
    assert type(error_for_code(Code.OUT_OF_RANGE, "end")) is ModelError


def test_a_client_deadline_can_shorten_the_servers_never_extend_it() -> None:
    manager = cast(ModelManager, None)  # the deadline rule needs no model
    assert DataPlane(manager, 10).deadline(100.0) is None
    assert DataPlane(manager, 10).deadline(100.0, None, 0.5) == 100.5
    server = DataPlane(manager, 10, request_timeout_s=2.0)
    assert server.deadline(100.0) == 102.0
    assert server.deadline(100.0, 0.25, None) == 100.25
    assert server.deadline(100.0, 30.0) == 102.0
    assert server.deadline(100.0, 3.0, 1.0) == 101.0
