"""``serving.json``: the routing every replica reads from the repository (DESIGN.md section 5).

```
{"default": "stable", "labels": {"stable": 3, "canary": 4}, "canary_weight": 0.1,
 "activate_at": "2026-11-25T12:00:00Z", "previous_default": 2}
```

* ``default``: a version number or one of the labels; without it (or without the file) requests that name no
  version go to the newest AVAILABLE version.
* ``labels``: label -> version, addressed as ``/v1/models/{m}/labels/{label}``.
* ``canary_weight``: the share (0..1) of default traffic that goes to the ``canary`` label's version.
* ``activate_at``: a UTC time; the default changes at that moment on every replica, by its clock, instead of
  at each replica's next poll. Until then default requests go to ``previous_default`` (written by
  ``rtserve rollout``; a hand-written file without it keeps what each replica served when it read the file).

Every replica loads every version the file names (the default, the previous default while it still applies, every
label) in addition to its version policy's choice, so that the switch finds the new default warm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator

from service.documents import RULE, Problem, broken_rule, validated
from service.names import MODEL_NAME_PATTERN, is_version

CANARY_LABEL = "canary"
FIELDS = ("default", "labels", "canary_weight", "activate_at", "previous_default")
# A routing file is a few hundred bytes; anything far past that is a mistake, not worth reading whole.
MAX_SERVING_CONFIG_BYTES = 64 * 1024


def parse_activation(text: str) -> float:
    """An ISO 8601 time with a zone (``2026-11-25T12:00:00Z``) as Unix seconds; ValueError names the problem."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-11-25T12:00:00Z") from None
    if moment.tzinfo is None:
        # A zone-less time means a different moment on every replica whose TZ differs: refuse it.
        raise ValueError(f"{text!r} has no time zone; write it in UTC, e.g. 2026-11-25T12:00:00Z")
    try:
        # Years 1 and 9999 with a zone offset fall outside what datetime can represent in UTC.
        timestamp = moment.timestamp()
        format_activation(timestamp)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is out of the range of times that can be written in UTC") from None
    return timestamp


def format_activation(timestamp: float) -> str:
    """Unix seconds as the UTC ISO 8601 text serving.json carries, to the millisecond."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class DefaultRoute:
    """Where requests without a version or label go, precomputed against the versions AVAILABLE on this replica.

    Rebuilt with every snapshot. Per request it only compares the clock with ``activate_at`` (and draws a number
    when a canary is set), which is what lets every replica switch at the same moment.
    """

    before: int | None = None  # the default until activate_at, or for good when there is none
    after: int | None = None  # the default from activate_at on
    after_available: bool = False  # False: the switch waits until ``after`` is AVAILABLE here
    activate_at: float | None = None  # Unix seconds
    canary: int | None = None  # the canary label's version, when AVAILABLE and weighted
    canary_weight: float = 0.0

    def switched(self, now: float) -> bool:
        return self.activate_at is not None and now >= self.activate_at and self.after_available

    def blocked(self, now: float) -> bool:
        """activate_at has passed but the new default is not AVAILABLE here, so the old one keeps serving."""
        return self.activate_at is not None and now >= self.activate_at and not self.after_available

    def version_at(self, now: float) -> int | None:
        return self.after if self.switched(now) else self.before

    def pending_at(self, now: float) -> int | None:
        """The version default requests are due to switch to and have not yet, if any."""
        if self.activate_at is None or self.switched(now):
            return None
        return self.after

    def pick(self, now: float, draw: Callable[[], float]) -> int | None:
        """The version for one default request; ``draw`` (uniform in [0, 1)) is called only with a canary."""
        if self.canary is not None and draw() < self.canary_weight:
            return self.canary
        return self.version_at(now)


@dataclass(frozen=True)
class ServingConfig:
    """A parsed, validated serving.json."""

    default: int | str | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    canary_weight: float = 0.0
    activate_at: float | None = None
    previous_default: int | None = None

    def target(self) -> int | None:
        """The version the default names (through its label), whether or not it has taken effect yet."""
        return self.labels.get(self.default) if isinstance(self.default, str) else self.default

    def before_activation(self, now: float) -> bool:
        return self.activate_at is not None and now < self.activate_at

    def effective_default(self, now: float) -> int | None:
        """The version the file sends default requests to at ``now``, as written (availability aside)."""
        return self.previous_default if self.before_activation(now) else self.target()

    def versions_to_load(self, now: float) -> set[int]:
        """Every version the file may route to: the default, every label, the previous default until the switch."""
        named = {self.target(), *self.labels.values()}
        if self.before_activation(now):
            named.add(self.previous_default)
        return {version for version in named if version is not None}

    def route(self, available: AbstractSet[int]) -> DefaultRoute:
        canary = self.labels.get(CANARY_LABEL) if self.canary_weight > 0 else None
        weighted = DefaultRoute(canary=canary if canary in available else None, canary_weight=self.canary_weight)
        target = self.target()
        if self.activate_at is None:
            return replace(weighted, before=usable_version(target, available))
        return replace(
            weighted,
            # Until the switch, never fall back to the version that is not due yet while another can answer.
            before=usable_version(self.previous_default, available, avoid=target),
            after=target,
            after_available=target in available,
            activate_at=self.activate_at,
        )

    def to_json(self) -> bytes:
        document: dict[str, Any] = {"default": self.default, "labels": dict(self.labels)}
        if self.canary_weight:
            document["canary_weight"] = self.canary_weight
        if self.activate_at is not None:
            document["activate_at"] = format_activation(self.activate_at)
            document["previous_default"] = self.previous_default
        clean = {key: value for key, value in document.items() if value is not None}
        return orjson.dumps(clean, option=orjson.OPT_INDENT_2) + b"\n"


def usable_version(wanted: int | None, available: AbstractSet[int], avoid: int | None = None) -> int | None:
    """``wanted`` when AVAILABLE, else the newest AVAILABLE version, other than ``avoid`` while another exists."""
    if wanted is not None and wanted in available:
        return wanted
    pool = (available - {avoid}) or available
    return max(pool) if pool else None


def parse_serving_config(data: bytes) -> ServingConfig:
    """Parse and validate serving.json; ValueError names what is wrong (and nothing else is raised)."""
    if len(data) > MAX_SERVING_CONFIG_BYTES:
        raise ValueError(f"serving.json is larger than {MAX_SERVING_CONFIG_BYTES} bytes")
    try:
        # orjson, not pydantic's parser: it refuses NaN and 1e999, which pydantic's would take as floats.
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"serving.json is not valid JSON: {error}") from None
    return validated(_SERVING_DOCUMENT, document, _explain, ValueError).config()


def check_named_versions(config: ServingConfig, present: AbstractSet[int], now: float) -> None:
    """ValueError unless every version the file routes to at ``now`` is in the repository.

    As TF Serving refuses a label for a version it does not have: such a file waits, the last good routing
    serving, until the version is published (then it applies at the next poll).
    """
    absent = sorted(config.versions_to_load(now) - present)
    if absent:
        raise ValueError(f"serving.json names version {absent[0]}, which the repository does not hold")


def _repository_version(version: int) -> int:
    # The repository's own range (1 to 10^18-1), so that any version the file names can be a folder.
    if not is_version(str(version)):
        raise ValueError("not a version number of the repository")
    return version


def _label_name(label: str) -> str:
    if not MODEL_NAME_PATTERN.fullmatch(label) or label.isdigit():
        raise ValueError("not a valid label name")
    return label


Version = Annotated[int, AfterValidator(_repository_version)]
Label = Annotated[str, AfterValidator(_label_name)]


class _ServingDocument(BaseModel):
    """serving.json as written. Field order is check order: a field's validator sees the fields before it."""

    # strict: true is no version, "3" no weight; forbid: a misspelt field (a canary weight that never applies)
    # would otherwise be ignored silently.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    labels: dict[Label, Version] = Field(default_factory=dict)
    default: Version | str | None = None
    canary_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    activate_at: str | None = None
    previous_default: Version | None = None

    @field_validator("default")
    @classmethod
    def _label_if_text(cls, default: int | str | None, info: ValidationInfo) -> int | str | None:
        if isinstance(default, str) and default not in info.data.get("labels", {}):
            raise ValueError("not one of its labels")  # worded as a bad default
        return default

    @field_validator("canary_weight")
    @classmethod
    def _canary_to_send_to(cls, weight: float, info: ValidationInfo) -> float:
        if weight > 0 and CANARY_LABEL not in info.data.get("labels", {}):
            raise broken_rule(f"'canary_weight' needs a {CANARY_LABEL!r} label to send traffic to")
        return weight

    @field_validator("activate_at")
    @classmethod
    def _default_to_activate(cls, activate_at: str | None, info: ValidationInfo) -> str | None:
        if activate_at is not None and "default" in info.data and info.data["default"] is None:
            raise broken_rule("'activate_at' needs a 'default' to activate")
        return activate_at

    @field_validator("previous_default", mode="before")
    @classmethod
    def _only_with_activation(cls, previous: object, info: ValidationInfo) -> object:
        # Before its own type: without activate_at any previous_default is the mistake, whatever it holds.
        if previous is not None and "activate_at" in info.data and info.data["activate_at"] is None:
            raise broken_rule("'previous_default' only applies with 'activate_at'")
        return previous

    def config(self) -> ServingConfig:
        """The routing the document describes; ValueError when its activate_at is no usable time (checked last)."""
        try:
            activate_at = None if self.activate_at is None else parse_activation(self.activate_at)
        except ValueError as error:
            raise ValueError(f"serving.json 'activate_at': {error}") from None
        return ServingConfig(self.default, self.labels, self.canary_weight, activate_at, self.previous_default)


_SERVING_DOCUMENT = TypeAdapter(_ServingDocument)


def _explain(problem: Problem) -> str:
    """The one-line message for the first problem pydantic found, worded as before pydantic (tests pin it)."""
    if problem.kind == RULE:
        return f"serving.json {problem.reason}"
    match problem.loc:
        case (str(name),) if problem.kind == "extra_forbidden":
            return f"serving.json has unknown field {name!r} (known: {', '.join(FIELDS)})"
        case ("labels",):
            return "serving.json 'labels' must be an object of label -> version"
        case ("labels", str(label), "[key]"):
            return f"serving.json label {label!r} is not a valid label name"
        case ("labels", str(label), *_):
            return f"serving.json label {label!r} must map to a positive version number"
        case ("default", *_):
            return "serving.json 'default' must be a positive version or one of its labels"
        case ("canary_weight", *_):
            return "serving.json 'canary_weight' must be a number from 0 to 1"
        case ("activate_at", *_):
            return "serving.json 'activate_at' must be a time in ISO 8601, e.g. 2026-11-25T12:00:00Z"
        case ("previous_default", *_):
            return "serving.json 'previous_default' must be a positive version number"
    return "serving.json must be a JSON object"
