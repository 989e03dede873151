"""Domain errors. Each carries a canonical status code; the API layer maps it to HTTP per protocol."""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """The canonical (gRPC/absl) status codes that TF Serving reports; names match TF Serving's JSON."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """An error with a canonical code and a one-line message that names the problem."""

    code: Code = Code.UNKNOWN
    # Seconds after which a retry may succeed (HTTP Retry-After); only errors about load set it.
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    code = Code.FAILED_PRECONDITION


class AlreadyExists(ServingError):
    """Something that is never overwritten, such as a published model version, is already there."""

    code = Code.ALREADY_EXISTS


class ResourceExhausted(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    code = Code.UNAVAILABLE


class Overloaded(Unavailable):
    """A model version's queue is full: refused at once, before any work, so the client can back off."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServingError):
    code = Code.DEADLINE_EXCEEDED


class Unimplemented(ServingError):
    code = Code.UNIMPLEMENTED


class Internal(ServingError):
    code = Code.INTERNAL


class DataLoss(ServingError):
    """Downloaded or stored bytes do not match what the manifest promises."""

    code = Code.DATA_LOSS


class RepositoryError(ServingError):
    """The model repository could not be reached or listed."""

    code = Code.UNAVAILABLE


class ModelLoadError(ServingError):
    """A version could not be turned into a servable (bad files, bad graph, failed warm-up)."""

    code = Code.UNKNOWN


class Cancelled(ServingError):
    """The caller went away (a client that closed its connection) before its answer was ready."""

    code = Code.CANCELLED


class ModelError(ServingError):
    """A failure the model's own run reported under a canonical code that has no class of its own here."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


# The classes above by code, so that a runtime's status code keeps its meaning (and its HTTP status) on the wire.
_BY_CODE: dict[Code, type[ServingError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        FailedPrecondition,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
    )
}


def error_for_code(code: Code, message: str) -> ServingError:
    """The domain error for a canonical code, e.g. a TensorFlow op's RESOURCE_EXHAUSTED (429, not 500)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else ModelError(code, message)
