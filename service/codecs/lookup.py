"""Finding a request's signature by name: one rule for the data plane and for decoders in worker processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.codecs.arrays import quote
from service.errors import FailedPrecondition, InvalidArgument
from service.tensors import DEFAULT_SIGNATURE, SignatureSpec


class UnknownSignature(FailedPrecondition):
    """A request names a signature the version does not have; ``key`` is the name it asked for.

    FAILED_PRECONDITION as in TF Serving (predict_util.cc); REST answers 400 for it as for INVALID_ARGUMENT. Each
    front end words it its own way from ``key`` (the message is REST's)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type[UnknownSignature], tuple[str, str]]:
        # Raised in decoding worker processes too: it must cross back whole.
        return (type(self), (self.message, self.key))


def find_signature(
    signatures: Mapping[str, SignatureSpec], name: str | None, method: str | None = None
) -> SignatureSpec:
    """A signature by name (default ``serving_default``), optionally required to have a method."""
    wanted = name or DEFAULT_SIGNATURE
    spec = signatures.get(wanted)
    if spec is None:
        known = ", ".join(sorted(signatures)) or "none"
        raise UnknownSignature(
            f"serving signature name {quote(wanted)} not found in signature def (has: {known})", wanted
        )
    if method is not None and spec.method_name != method:
        raise InvalidArgument(
            f"signature {quote(wanted)} has method_name {spec.method_name}, the request needs {method}"
        )
    return spec


@dataclass(frozen=True)
class SignatureLookup:
    """``find_signature`` bound to one version's signatures; picklable, so a worker process can use it."""

    signatures: Mapping[str, SignatureSpec]

    def __call__(self, name: str) -> SignatureSpec:
        return find_signature(self.signatures, name)
