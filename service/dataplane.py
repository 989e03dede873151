"""Protocol-agnostic inference: resolve a model version, check inputs against its signature, run it.

Both wire protocols call into this one module, so resolution rules, validation messages and metrics are the same
whichever protocol a client speaks.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from service.batch_safety import Verdict
from service.codecs.arrays import check_shape, is_decimal, quote
from service.codecs.lookup import SignatureLookup, find_signature
from service.errors import InvalidArgument, NotFound, ServingError, Unavailable
from service.manager import LoadedVersion, ModelManager, ModelSnapshot, VersionStatus
from service.model_set import ModelSet
from service.tensors import SignatureSpec


def parse_version(text: str | None) -> int | None:
    """A version from a URL path: digits only (TF Serving's rule and message), None when absent."""
    if text is None:
        return None
    if not is_decimal(text) or len(text) > 18:
        raise InvalidArgument(f"Failed to convert version: {quote(text)} to numeric.")
    return int(text)


class CachePaths:
    """Rewrites the download cache's paths in a message as the model and version they hold.

    A runtime names the folder it loaded (``<cache_dir>/<model>/<version>-<hash>``); a client knows the model
    and the version, and the server's file layout is none of its business.
    """

    _PATH_END = r"[^\s'\",;:)]*"

    def __init__(self, cache_dir: Path) -> None:
        roots = {str(cache_dir), str(cache_dir.resolve())} - {".", "/"}  # a root that short would match anything
        # Absolute first: the relative one may be inside it.
        alternatives = "|".join(re.escape(root) for root in sorted(roots, key=len, reverse=True))
        folder = r"(?P<model>[^/\s'\"]+)/(?P<version>[0-9]+)-[0-9a-f]{12}"
        self._version = re.compile(rf"(?:model version )?(?:{alternatives})/{folder}(?:/(?P<file>{self._PATH_END}))?")
        self._anything = re.compile(rf"(?:{alternatives}){self._PATH_END}")

    def _as_version(self, match: re.Match[str]) -> str:
        named = f"model {quote(match['model'])} version {int(match['version'])}"
        return f"{named} file {quote(match['file'])}" if match["file"] else named

    def scrub(self, message: str) -> str:
        return self._anything.sub("the model cache", self._version.sub(self._as_version, message))


@dataclass(frozen=True)
class Target:
    """What a request addresses: a model, and at most one of a version or a label."""

    model: str
    version: int | None = None
    label: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"model {quote(self.model)} version {self.version}"
        if self.label is not None:
            return f"model {quote(self.model)} label {quote(self.label)}"
        return f"model {quote(self.model)}"


class ModelNotServed(NotFound):
    """The model a request names is not served here."""

    def __init__(self, message: str, target: Target) -> None:
        super().__init__(message)
        self.target = target

    def __reduce__(self) -> tuple[type[ModelNotServed], tuple[str, Target]]:
        return (type(self), (self.message, self.target))


class VersionNotAvailable(NotFound):
    """The model is served but the version a request resolves to is not AVAILABLE; ``version`` is the one it
    resolved to (None: the model has no default version yet)."""

    def __init__(self, message: str, target: Target, version: int | None) -> None:
        super().__init__(message)
        self.target = target
        self.version = version

    def __reduce__(self) -> tuple[type[VersionNotAvailable], tuple[str, Target, int | None]]:
        return (type(self), (self.message, self.target, self.version))


class LabelNotFound(NotFound):
    """The model has no version label by the name a request gives."""

    def __init__(self, message: str, target: Target) -> None:
        super().__init__(message)
        self.target = target

    def __reduce__(self) -> tuple[type[LabelNotFound], tuple[str, Target]]:
        return (type(self), (self.message, self.target))


class StatusNotFound(NotFound):
    """A status request names a model or version with no status (``target.version`` None: no version at all).

    Its message is the V2 APIs'; TF Serving's front ends word it as TF Serving (get_model_status_impl.cc)."""

    def __init__(self, message: str, target: Target) -> None:
        super().__init__(message)
        self.target = target

    def __reduce__(self) -> tuple[type[StatusNotFound], tuple[str, Target]]:
        return (type(self), (self.message, self.target))


@dataclass(frozen=True)
class ModelStatus:
    """TF Serving's GetModelStatus answer: the state and last error of every version a request asked about."""

    model: str
    versions: tuple[VersionStatus, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """What a metadata request answers: one AVAILABLE version's signatures, and the versions the model serves."""

    model: str
    version: int
    version_label: str
    signatures: Mapping[str, SignatureSpec]
    available_versions: tuple[int, ...]  # ascending
    batching: Mapping[str, Verdict]  # each signature's batching verdict

    def signature(self, name: str | None, method: str | None = None) -> SignatureSpec:
        return find_signature(self.signatures, name, method)


class DataPlane:
    """Resolution, validation and execution shared by the TF Serving and Open Inference protocols."""

    def __init__(
        self,
        manager: ModelManager,
        max_tensor_elements: int,
        request_timeout_s: float = 0.0,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._manager = manager
        self.max_tensor_elements = max_tensor_elements
        self._request_timeout_s = request_timeout_s
        # The wall clock, because serving.json's activate_at is a UTC time shared by every replica.
        self._clock = clock
        self._draw = (rng or random.Random()).random  # the canary split: one uniform draw per default request

    @cached_property
    def _cache_paths(self) -> CachePaths:
        return CachePaths(self._manager.cache_dir)

    # -- resolution -----------------------------------------------------------------------------------------

    def metric_label(self, name: str) -> str:
        """The model_name label for a request: the name when served, "" otherwise (bounded cardinality)."""
        return name if name in self._manager.snapshot() else ""

    def model(self, name: str) -> ModelSnapshot:
        snapshot = self._manager.snapshot().get(name)
        if snapshot is None:
            raise ModelNotServed(f"model {quote(name)} is not served here", Target(name))
        return snapshot

    def resolve(self, target: Target) -> LoadedVersion:
        """The AVAILABLE version a request goes to; NotFound names what is missing (a subclass says which)."""
        snapshot = self._manager.snapshot().get(target.model)
        if snapshot is None:
            raise ModelNotServed(f"model {quote(target.model)} is not served here", target)
        model = snapshot
        if target.label is not None:
            if target.label not in model.labels:
                raise LabelNotFound(f"model {quote(target.model)} has no version label {quote(target.label)}", target)
            version = model.labels[target.label]
        elif target.version is not None:
            version = target.version
        else:
            default = model.route.pick(self._clock(), self._draw)
            if default is None:
                raise VersionNotAvailable(f"model {quote(target.model)} has no AVAILABLE version yet", target, None)
            version = default
        loaded = model.available.get(version)
        if loaded is None:
            raise VersionNotAvailable(f"{target.describe()} is not AVAILABLE (version {version})", target, version)
        return loaded

    def lease(self, target: Target) -> Lease:
        """Hold a version for the length of a request (``with dataplane.lease(target) as loaded``) so that an
        unload waits for it."""
        return Lease(self, target)

    # -- status and metadata ------------------------------------------------------------------------------

    def status(self, target: Target) -> ModelStatus:
        """Every version's status, or the one version a request's version or label names."""
        model = self._manager.snapshot().get(target.model)
        if model is None:
            raise StatusNotFound(f"model {quote(target.model)} is not served here", Target(target.model))
        statuses = model.statuses
        if target.version is not None or target.label is not None:
            version = self.resolve(target).version if target.label is not None else target.version
            statuses = tuple(s for s in model.statuses if s.version == version)
            if not statuses:
                raise StatusNotFound(
                    f"Could not find version {version} of model {quote(target.model)}", replace(target, version=version)
                )
        if not statuses:
            raise StatusNotFound(f"Could not find any versions of model {quote(target.model)}", Target(target.model))
        return self._scrubbed(target.model, statuses)

    def index(self) -> tuple[ModelStatus, ...]:
        """Every served model by name with the status of each of its versions (none yet: an empty tuple)."""
        return tuple(self._scrubbed(name, model.statuses) for name, model in sorted(self._manager.snapshot().items()))

    def _scrubbed(self, model: str, statuses: tuple[VersionStatus, ...]) -> ModelStatus:
        scrub = self._cache_paths.scrub
        return ModelStatus(model, tuple(replace(s, error_message=scrub(s.error_message)) for s in statuses))

    def metadata(self, target: Target) -> ModelMetadata:
        """The signatures of the version a request resolves to, held by a lease while they are read."""
        with self.lease(target) as loaded:  # first: its errors name the whole target (version, label)
            model = self.model(target.model)
            return ModelMetadata(
                model=loaded.model,
                version=loaded.version,
                version_label=loaded.version_label,
                signatures=loaded.servable.signatures,
                available_versions=tuple(sorted(model.available)),
                batching=loaded.batcher.merging,
            )

    # -- the model set -----------------------------------------------------------------------------------------

    def apply_model_set(self, model_set: ModelSet) -> None:
        """Serve ``model_set`` from now on (TF Serving's HandleReloadConfigRequest): blocking I/O, run it off the
        event loop. A set that cannot be applied raises a ServingError naming why, and the current one serves on."""
        self._manager.apply_model_set(model_set)

    # -- signatures and validation --------------------------------------------------------------------------

    @staticmethod
    def signature(loaded: LoadedVersion, name: str | None, method: str | None = None) -> SignatureSpec:
        """A signature by name (default ``serving_default``), optionally required to have a method."""
        return find_signature(loaded.servable.signatures, name, method)

    @staticmethod
    def lookup(loaded: LoadedVersion) -> SignatureLookup:
        """The version's signatures by name, for a decoder (picklable: it may run in a worker process)."""
        return SignatureLookup(loaded.servable.signatures)

    @staticmethod
    def check_shapes(signature: SignatureSpec, inputs: Mapping[str, np.ndarray]) -> None:
        """Each input's shape must fit the signature before any work is done.

        The names were checked once already, by the decoder that built ``inputs`` from this signature
        (``arrays.check_names``): ``inputs`` names exactly the signature's inputs.
        """
        for name, array in inputs.items():
            check_shape(signature.inputs[name], array, f"input {name!r}")

    # -- execution ------------------------------------------------------------------------------------------

    def deadline(self, arrived: float, *client_timeouts_s: float | None) -> float | None:
        """When a request that arrived at ``arrived`` (time.monotonic()) must be answered: after the shortest of
        the client's timeouts and RTSERVE_REQUEST_TIMEOUT_S (a client may shorten the server's, never extend it);
        None when neither is set."""
        if self._request_timeout_s <= 0 and all(timeout is None for timeout in client_timeouts_s):
            return None  # the common case, with nothing to compare
        limits = [timeout for timeout in client_timeouts_s if timeout is not None]
        if self._request_timeout_s > 0:
            limits.append(self._request_timeout_s)
        return arrived + min(limits) if limits else None

    async def run(
        self,
        loaded: LoadedVersion,
        signature: SignatureSpec,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a validated request in the version's next batch, on its inference thread.

        ``deadline`` is a time.monotonic() value (``deadline()``); without one, the server's request_timeout_s
        applies from this call, when set. Still queued at the deadline, the request is dropped without running;
        running, its caller gets DeadlineExceeded (504) at the deadline.
        """
        if deadline is None and self._request_timeout_s > 0:
            deadline = time.monotonic() + self._request_timeout_s
        # A missing signature is InvalidArgument wherever it is found: here and in the runtime (both find_signature).
        find_signature(loaded.servable.signatures, signature.name)
        try:
            return await loaded.batcher.submit(signature, inputs, deadline)
        except ServingError as error:
            message = self._cache_paths.scrub(error.message)
            if message != error.message:
                error.message = message
                error.args = (message,)
            raise


class Lease:
    """A version held for one request; a class rather than a generator-based context manager, which costs
    three times as much on every request."""

    __slots__ = ("_dataplane", "_loaded", "_target")

    def __init__(self, dataplane: DataPlane, target: Target) -> None:
        self._dataplane = dataplane
        self._target = target
        self._loaded: LoadedVersion | None = None

    def __enter__(self) -> LoadedVersion:
        for _ in range(3):
            loaded = self._dataplane.resolve(self._target)
            if loaded.acquire():
                self._loaded = loaded
                return loaded
        # Unloaded three times under our feet: the next snapshot is still being published.
        raise Unavailable(f"{self._target.describe()} is being unloaded; retry")

    def __exit__(self, *exc_info: object) -> None:
        if self._loaded is not None:
            self._loaded.release()
            self._loaded = None
