"""An explicit model set: TF Serving's ``model_config_list`` as a typed value (no text-proto parsing here).

The JSON shape is the proto's JSON mapping (snake_case or protobuf's lowerCamelCase field names), so that a TF
Serving config file converts to it field for field::

    {"config": [{"name": "iris", "base_path": "s3://models/iris", "model_platform": "tensorflow",
                 "model_version_policy": {"latest": {"num_versions": 2}},
                 "version_labels": {"stable": 3, "canary": 4}}]}

``base_path`` is a folder or an ``s3://bucket/prefix`` that holds the model's version folders directly.
``model_version_policy`` is one of ``{"latest": {"num_versions": N}}``, ``{"all": {}}`` or
``{"specific": {"versions": [1, 2]}}``; without it, the newest version serves (TF Serving's default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from service.names import MODEL_NAME_PATTERN, is_model_name, is_version
from service.policy import VersionPolicy

PLATFORMS = ("tensorflow",)


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt policy or label field must not be ignored silently. Field names are
    # accepted as the proto spells them and in the lowerCamelCase that protobuf's JSON printer writes.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        protected_namespaces=(),
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
    )


class LatestVersions(_Strict):
    num_versions: int = Field(1, ge=1)


class AllVersions(_Strict):
    pass


class SpecificVersions(_Strict):
    versions: tuple[int, ...] = Field(min_length=1)

    @field_validator("versions")
    @classmethod
    def _check_versions(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for version in value:
            _check_version(version)
        return value


class VersionPolicyConfig(_Strict):
    """Exactly one of latest, all, specific (a proto ``oneof``)."""

    latest: LatestVersions | None = None
    all: AllVersions | None = None
    specific: SpecificVersions | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> VersionPolicyConfig:
        chosen = [name for name in ("latest", "all", "specific") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"model_version_policy sets {' and '.join(chosen)}: choose one")
        return self

    def policy(self) -> VersionPolicy:
        if self.all is not None:
            return VersionPolicy("all")
        if self.specific is not None:
            return VersionPolicy("specific", specific=frozenset(self.specific.versions))
        return VersionPolicy("latest", latest=self.latest.num_versions if self.latest is not None else 1)


class ModelConfig(_Strict):
    """One model: its name, where its version folders are, which of them to serve and their labels."""

    name: str
    base_path: str = Field(min_length=1)
    model_platform: str = "tensorflow"
    model_version_policy: VersionPolicyConfig = Field(default_factory=VersionPolicyConfig)
    version_labels: dict[str, int] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not is_model_name(value):
            raise ValueError(f"invalid model name {value!r}: expected {MODEL_NAME_PATTERN.pattern} without '..'")
        return value

    @field_validator("model_platform")
    @classmethod
    def _check_platform(cls, value: str) -> str:
        if value not in PLATFORMS:
            raise ValueError(f"model_platform {value!r} is not served here (expected {', '.join(PLATFORMS)})")
        return value

    @field_validator("version_labels")
    @classmethod
    def _check_labels(cls, value: dict[str, int]) -> dict[str, int]:
        # The rules of serving.json's labels, so that a label means the same wherever it is written.
        for label, version in value.items():
            if not MODEL_NAME_PATTERN.fullmatch(label) or label.isdigit():
                raise ValueError(f"version label {label!r} is not a valid label name")
            _check_version(version)
        return value

    @property
    def policy(self) -> VersionPolicy:
        return self.model_version_policy.policy()


class ModelSet(_Strict):
    """TF Serving's ModelConfigList: the models to serve, each named once."""

    config: tuple[ModelConfig, ...] = ()

    @field_validator("config")
    @classmethod
    def _unique_names(cls, value: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        seen: set[str] = set()
        for model in value:
            if model.name in seen:
                raise ValueError(f"model {model.name!r} is listed more than once")
            seen.add(model.name)
        return value

    def by_name(self) -> Mapping[str, ModelConfig]:
        return {model.name: model for model in self.config}


def _check_version(version: int) -> None:
    if not is_version(str(version)):
        raise ValueError(f"invalid version {version!r}: expected an integer from 1 to 10^18-1")


def parse_model_set(document: Any) -> ModelSet:
    """A ModelSet from its JSON mapping (already decoded); ValueError with one line naming the first problem."""
    try:
        return ModelSet.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "model set"
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
