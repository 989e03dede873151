"""API keys in gRPC metadata: the REST gate's keys and rules (service/api/keys.py) as a server interceptor.

No key: UNAUTHENTICATED; a key that matches none: PERMISSION_DENIED; both counted in rtserve_auth_failures_total
with the protocol label. Health and reflection are exempt while RTSERVE_GRPC__AUTH_EXEMPT_HEALTH is true. A method
that does not exist answers UNIMPLEMENTED with or without a key: grpcurl falls back from reflection v1 to v1alpha
only on UNIMPLEMENTED, and method names are public protocol anyway.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter

from service.api.grpc.handlers import Continuation, Handler, refusing, service_of
from service.api.keys import INVALID, MESSAGES, MISSING, KeyFile, presented_keys

_STATUS = {MISSING: grpc.StatusCode.UNAUTHENTICATED, INVALID: grpc.StatusCode.PERMISSION_DENIED}


def protocol_of(service: str) -> str:
    """The protocol label of a gRPC service's calls."""
    if service.startswith("tensorflow.serving."):
        return "grpc-tfserving"
    if service.startswith("inference."):
        return "grpc-v2"
    return "grpc"


class ApiKeyGate:
    """Lets a call through when its metadata carries an accepted key or its service is exempt."""

    def __init__(self, keys: KeyFile, exempt: frozenset[str], failures: Counter) -> None:
        self._keys = keys
        self._exempt = exempt
        self._failures = failures

    def refusing(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler | None:
        """A handler that refuses the call (counted), or None when the call may go on."""
        service = service_of(details.method)
        if service in self._exempt:
            return None
        metadata = details.invocation_metadata or ()
        presented = presented_keys(
            (key.lower().encode("utf-8"), value.encode("utf-8")) for key, value in metadata if isinstance(value, str)
        )
        refusal = self._keys.refusal(presented)
        if refusal is None:
            return None
        self._failures.labels(refusal, protocol_of(service)).inc()
        return refusing(handler, _STATUS[refusal], MESSAGES[refusal])


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """The gate as an interceptor of its own (the server runs it inside its one interceptor,
    service/api/grpc/access.py; this one alone is for measuring it)."""

    def __init__(self, keys: KeyFile, exempt: frozenset[str], failures: Counter) -> None:
        self._gate = ApiKeyGate(keys, exempt, failures)

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._gate.refusing(details, handler) or handler
