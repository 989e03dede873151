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
from typing import Any, TypeGuard

import orjson

from service.repository.base import MODEL_NAME_PATTERN, is_version

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
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"serving.json is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("serving.json must be a JSON object")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        # A misspelt field would otherwise be ignored silently, e.g. a canary weight that never applies.
        raise ValueError(f"serving.json has unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    labels = _labels(document.get("labels", {}))
    default = _default(document.get("default"), labels)
    canary_weight = _canary_weight(document.get("canary_weight", 0), labels)
    activate_at, previous = _activation(document.get("activate_at"), document.get("previous_default"), default)
    return ServingConfig(default, labels, canary_weight, activate_at, previous)


def check_named_versions(config: ServingConfig, present: AbstractSet[int], now: float) -> None:
    """ValueError unless every version the file routes to at ``now`` is in the repository.

    As TF Serving refuses a label for a version it does not have: such a file waits, the last good routing
    serving, until the version is published (then it applies at the next poll).
    """
    absent = sorted(config.versions_to_load(now) - present)
    if absent:
        raise ValueError(f"serving.json names version {absent[0]}, which the repository does not hold")


def _is_version(value: object) -> TypeGuard[int]:
    # The repository's own range (1 to 10^18-1), so that any version the file names can be a folder.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and is_version(str(value))


def _labels(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError("serving.json 'labels' must be an object of label -> version")
    for label, version in raw.items():
        if not MODEL_NAME_PATTERN.fullmatch(label) or label.isdigit():
            raise ValueError(f"serving.json label {label!r} is not a valid label name")
        if not _is_version(version):
            raise ValueError(f"serving.json label {label!r} must map to a positive version number")
    return dict(raw)


def _default(raw: object, labels: Mapping[str, int]) -> int | str | None:
    if raw is None or _is_version(raw):
        return raw
    if isinstance(raw, str) and raw in labels:
        return raw
    raise ValueError("serving.json 'default' must be a positive version or one of its labels")


def _canary_weight(raw: object, labels: Mapping[str, int]) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 <= raw <= 1.0:
        raise ValueError("serving.json 'canary_weight' must be a number from 0 to 1")
    if raw > 0 and CANARY_LABEL not in labels:
        raise ValueError(f"serving.json 'canary_weight' needs a {CANARY_LABEL!r} label to send traffic to")
    return float(raw)


def _activation(raw: object, previous: object, default: int | str | None) -> tuple[float | None, int | None]:
    if raw is None:
        if previous is not None:
            raise ValueError("serving.json 'previous_default' only applies with 'activate_at'")
        return None, None
    if not isinstance(raw, str):
        raise ValueError("serving.json 'activate_at' must be a time in ISO 8601, e.g. 2026-11-25T12:00:00Z")
    if default is None:
        raise ValueError("serving.json 'activate_at' needs a 'default' to activate")
    if previous is not None and not _is_version(previous):
        raise ValueError("serving.json 'previous_default' must be a positive version number")
    try:
        return parse_activation(raw), previous if _is_version(previous) else None
    except ValueError as error:
        raise ValueError(f"serving.json 'activate_at': {error}") from None
