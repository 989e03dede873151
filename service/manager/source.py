"""Where the served model set comes from: the repository scan of old, or an explicit list (``model_set.py``).

The manager asks a source three things: which models to poll, where each one's versions live and which of them
to serve (a ``ModelOrigin``), and which models readiness waits for at start; ``Completeness`` tells which listed
versions may be loaded. Replacing the source while serving is the manager's ``apply_model_set``; this module
holds the pure parts of it (opening, checking, comparing).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from service.errors import Code, RepositoryError, ServingError
from service.manager.routing import ServingConfig
from service.model_set import ModelSet, parse_model_set
from service.policy import VersionPolicy
from service.repository.base import Repository, VersionListing
from service.repository.factory import check_model_base, open_model_base
from service.repository.view import ModelBase
from service.settings import S3Settings, Settings

REPOSITORY_SCAN = "repository"
MODEL_CONFIG_LIST = "model_config_list"


class ModelSetError(ServingError):
    """A model set that cannot be applied; the one serving stays. Its code says whose fault (TF Serving's)."""

    def __init__(self, message: str, code: Code = Code.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ModelOrigin:
    """One served model: the repository its versions are listed from, its version policy and its labels."""

    name: str
    repository: Repository
    policy: VersionPolicy
    labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def base_path(self) -> str:
        """Where the versions are, comparable across sources (a scan's model and a listed one can be the same)."""
        if isinstance(self.repository, ModelBase):
            return self.repository.uri
        return f"{self.repository.uri.rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class ModelSetStatus:
    """The server-level status of the model set: what serves, and why the last list was refused, if it was."""

    source: str  # REPOSITORY_SCAN or MODEL_CONFIG_LIST
    models: tuple[str, ...]  # the listed models; for a scan, RTSERVE_MODELS as written ('*' included)
    applied: int = 0  # lists applied by apply_model_set since the start
    error_code: Code = Code.OK
    error_message: str = ""


@dataclass
class Completeness:
    """Which of a model's listed versions are complete (DESIGN.md section 3): half-uploaded ones are never loaded.

    A version with its manifest is complete (its files are verified after download); one without, written by
    another tool, once its listing is unchanged across two polls.
    """

    # The fingerprints seen at the previous poll, by version.
    previous: dict[int, tuple[tuple[str, int, str], ...]] = field(default_factory=dict)

    def update(self, listings: Mapping[int, VersionListing]) -> set[int]:
        """The complete versions of this poll's ``listings``, remembered for the next poll."""
        complete = set()
        for version, listing in listings.items():
            stable = self.previous.get(version) == listing.fingerprint()
            if listing.has_manifest or (stable and listing.files):
                complete.add(version)
        self.previous = {v: listing.fingerprint() for v, listing in listings.items()}
        return complete


class RepositoryScan:
    """RTSERVE_MODELS inside the one repository root; '*' serves every model folder found there."""

    kind = REPOSITORY_SCAN

    def __init__(self, settings: Settings, repository: Repository) -> None:
        self._settings = settings
        self._repository = repository
        self._origins: dict[str, ModelOrigin] = {}
        self.models = tuple(settings.models)

    def names(self, known: AbstractSet[str]) -> list[str]:
        """The models to poll; RepositoryError when '*' needs a listing of the root and it fails."""
        explicit = [name for name in self._settings.models if name != "*"]
        if not self._settings.serves_every_model:
            return explicit
        found = self._repository.list_models()
        # Models that disappeared from the listing keep serving: an empty listing is not a reason to go dark.
        return sorted(set(found) | set(explicit) | known)

    def origin(self, name: str) -> ModelOrigin:
        # One object per model, so that the manager can tell by identity that the source did not change.
        origin = self._origins.get(name)
        if origin is None:
            origin = self._origins.setdefault(
                name, ModelOrigin(name, self._repository, self._settings.policy_for(name))
            )
        return origin

    def required(self) -> tuple[str, ...] | None:
        """The models the first readiness waits for; None for '*' (see the manager's ``_first_ready``)."""
        if self._settings.serves_every_model:
            return None
        return tuple(name for name in self._settings.models if name != "*")


class ModelList:
    """An explicit model set: exactly the listed models, each from its own base path."""

    kind = MODEL_CONFIG_LIST

    def __init__(self, origins: Mapping[str, ModelOrigin]) -> None:
        self._origins = dict(origins)
        self.models = tuple(self._origins)

    def names(self, known: AbstractSet[str]) -> list[str]:
        return sorted(self._origins)

    def origin(self, name: str) -> ModelOrigin | None:
        return self._origins.get(name)

    def required(self) -> tuple[str, ...]:
        return self.models

    def origins(self) -> Mapping[str, ModelOrigin]:
        return MappingProxyType(self._origins)


ModelSource = RepositoryScan | ModelList


def as_model_set(offered: ModelSet | Mapping[str, object]) -> ModelSet:
    """The typed model set, parsing a JSON mapping (from a file or a reload request); ModelSetError if it is bad."""
    if isinstance(offered, ModelSet):
        return offered
    try:
        return parse_model_set(offered)
    except ValueError as error:
        raise ModelSetError(f"model set: {error}") from None


def open_model_list(model_set: ModelSet, s3: S3Settings) -> ModelList:
    """Each listed model's repository view, without touching the store; ModelSetError for a bad base path."""
    origins: dict[str, ModelOrigin] = {}
    for config in model_set.config:
        try:
            base = open_model_base(config.name, config.base_path, s3)
        except ValueError as error:
            raise ModelSetError(f"model {config.name}: {error}") from None
        origins[config.name] = ModelOrigin(config.name, base, config.policy, MappingProxyType(config.version_labels))
    return ModelList(origins)


def check_reachable(models: ModelList, current: ModelSource) -> None:
    """ModelSetError unless every new or moved model's base path can be listed now (kept ones already are)."""
    for name, origin in models.origins().items():
        before = current.origin(name)
        if before is not None and before.base_path == origin.base_path:
            continue
        assert isinstance(origin.repository, ModelBase)  # open_model_list builds nothing else
        try:
            check_model_base(origin.repository)
        except RepositoryError as error:
            raise ModelSetError(f"model {name}: cannot open base path: {error.message}", Code.UNAVAILABLE) from None


def check_labels(
    models: ModelList,
    current: ModelSource,
    available: Mapping[str, AbstractSet[int]],
    allow_unavailable: bool,
) -> None:
    """TF Serving's rule for version labels, checked for the models that keep serving from the same base path.

    A label may name only an AVAILABLE version; with ``allow_version_labels_for_unavailable_models`` a label
    that is new for the model may name one that is not (yet). A label kept as it is is not checked again, and a
    new or moved model's labels apply as its versions become AVAILABLE (TF Serving waits for them too).
    """
    for name, origin in models.origins().items():
        before = current.origin(name)
        if before is None or before.base_path != origin.base_path:
            continue
        for label, version in sorted(origin.labels.items()):
            if before.labels.get(label) == version or version in available.get(name, ()):
                continue
            if allow_unavailable and label not in before.labels:
                continue
            raise ModelSetError(
                f"model {name}: label {label!r} names version {version}, which is not AVAILABLE",
                Code.FAILED_PRECONDITION,
            )


def keep_repository(origin: ModelOrigin, before: ModelOrigin | None) -> tuple[ModelOrigin, bool]:
    """``origin`` with ``before``'s repository when the base path is the same (then False: no reload), else True.

    Keeping the same repository object is what tells a load begun before the change from one begun after it.
    """
    if before is not None and before.base_path == origin.base_path:
        return replace(origin, repository=before.repository), False
    return origin, before is not None


def with_labels(config: ServingConfig, labels: Mapping[str, int]) -> ServingConfig:
    """serving.json's routing with the model set's labels; the list's label wins where both name one."""
    if not labels:
        return config
    return replace(config, labels={**config.labels, **labels})
