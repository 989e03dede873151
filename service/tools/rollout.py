"""What ``rtserve rollout`` does apart from parsing arguments: a read-modify-write of a model's serving.json.

The new file keeps the labels (and canary weight) it found. With an activation time it also records the version
default requests go to until then (``previous_default``), so that a replica started in between routes like the
others. Errors are ServingError subclasses with one-line messages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.manager.routing import ServingConfig, format_activation, parse_serving_config
from service.repository.base import SERVING_CONFIG_NAME, Repository, check_model_name, check_version


@dataclass(frozen=True)
class RolloutRequest:
    """What the operator asked for."""

    model: str
    version: int
    label: str | None = None  # move this label instead of setting the default to a version number
    activate_at: float | None = None  # Unix seconds; None: each replica switches at its next poll
    canary_weight: float | None = None  # None: keep the file's


@dataclass(frozen=True)
class Rollout:
    """The routing before (None: no serving.json) and the routing written."""

    before: ServingConfig | None
    after: ServingConfig
    warnings: tuple[str, ...] = ()


def read_serving_config(repository: Repository, model: str) -> ServingConfig | None:
    """The model's current serving.json, None when absent; an invalid one is refused rather than overwritten."""
    data = repository.read_model_file(model, SERVING_CONFIG_NAME)
    if data is None:
        return None
    try:
        return parse_serving_config(data)
    except ValueError as error:
        # Rewriting it would drop whatever labels it holds: the operator fixes or deletes it first.
        message = f"the current {SERVING_CONFIG_NAME} of {model} is invalid ({error}); fix or delete it"
        raise FailedPrecondition(message) from None


def plan(current: ServingConfig, request: RolloutRequest, serving_now: int | None, now: float) -> ServingConfig:
    """The new routing; ``serving_now`` is the version default requests go to at ``now`` (for previous_default)."""
    labels = dict(current.labels)
    if request.label is not None:
        labels[request.label] = request.version
    weight = current.canary_weight if request.canary_weight is None else request.canary_weight
    moves_default = request.label is None or current.default == request.label
    if not moves_default:
        if request.activate_at is not None:
            raise InvalidArgument(f"--at applies to the default, and label {request.label!r} is not the default")
        return replace(current, labels=labels, canary_weight=weight)
    if request.activate_at is not None and request.activate_at <= now:
        raise InvalidArgument(
            f"the activation time {format_activation(request.activate_at)} has passed; omit it to switch at once"
        )
    default = request.label if request.label is not None else request.version
    if request.activate_at is None:
        return ServingConfig(default, labels, weight)
    return ServingConfig(default, labels, weight, request.activate_at, previous_default=serving_now)


def rollout(repository: Repository, request: RolloutRequest, now: float) -> Rollout:
    """Validate ``request`` against the repository, then write the model's new serving.json."""
    check_model_name(request.model)
    check_version(request.version)
    listings = repository.list_versions(request.model)
    listing = listings.get(request.version)
    if listing is None:
        raise NotFound(f"{request.model} version {request.version} is not in {repository.uri}")
    warnings: tuple[str, ...] = ()
    if not listing.has_manifest:
        warnings = (
            f"{request.model} version {request.version} has no MANIFEST.json: replicas load it only once "
            "its listing is stable across two polls",
        )
    before = read_serving_config(repository, request.model)
    current = before or ServingConfig()
    # Without a default in the file, replicas serve their newest complete version.
    newest = max((v for v, item in listings.items() if item.has_manifest), default=None)
    serving_now = current.effective_default(now) or newest
    after = plan(current, request, serving_now, now)
    try:
        parse_serving_config(after.to_json())  # the rules replicas apply, before anything is written
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
    repository.write_model_file(request.model, SERVING_CONFIG_NAME, after.to_json())
    return Rollout(before, after, warnings)


def describe(model: str, rollout_: Rollout) -> str:
    """One line for the operator: what default requests do now and when."""
    after = rollout_.after
    target = after.target()
    if after.activate_at is None:
        return f"{model}: default requests go to version {target} as each replica reads serving.json (next poll)"
    return (
        f"{model}: default requests go to version {after.previous_default} until "
        f"{format_activation(after.activate_at)}, then to version {target} on every replica"
    )
