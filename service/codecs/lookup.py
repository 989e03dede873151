"""Finding a request's signature by name: one rule for the data plane and for decoders in worker processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.codecs.arrays import quote
from service.errors import FailedPrecondition, InvalidArgument
from service.tensors import CLASSIFY_METHOD, DEFAULT_SIGNATURE, SignatureSpec


class UnknownSignature(FailedPrecondition):
    """A request names a signature the version does not have; ``key`` is the name it asked for.

    FAILED_PRECONDITION as in TF Serving (predict_util.cc); REST answers 400 for it as for INVALID_ARGUMENT. Each
    front end words it its own way from ``key`` and ``method`` (the method the request needed, None for predict;
    the message is the V2 APIs')."""

    def __init__(self, message: str, key: str, method: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.method = method

    def __reduce__(self) -> tuple[type[UnknownSignature], tuple[str, str, str | None]]:
        # Raised in decoding worker processes too: it must cross back whole.
        return (type(self), (self.message, self.key, self.method))


def find_signature(
    signatures: Mapping[str, SignatureSpec], name: str | None, method: str | None = None
) -> SignatureSpec:
    """A signature by name (default ``serving_default``), optionally required to have a method."""
    wanted = name or DEFAULT_SIGNATURE
    spec = signatures.get(wanted)
    if spec is None:
        known = ", ".join(sorted(signatures)) or "none"
        raise UnknownSignature(
            f"serving signature name {quote(wanted)} not found in signature def (has: {known})", wanted, method
        )
    if method is not None and spec.method_name != method:
        # Only TF Serving's classify and regress ask for a method: its words (classifier.cc, regressor.cc).
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise InvalidArgument(f"Expected {kind} signature method_name to be {method}. Was: {spec.method_name}")
    return spec


@dataclass(frozen=True)
class SignatureLookup:
    """``find_signature`` bound to one version's signatures; picklable, so a worker process can use it."""

    signatures: Mapping[str, SignatureSpec]

    def __call__(self, name: str) -> SignatureSpec:
        return find_signature(self.signatures, name)
