"""``serving.json``: the routing every replica reads from the repository (DESIGN.md section 5).

``{"default": "stable", "labels": {"stable": 3, "canary": 4}}`` — ``default`` is a version number or a label;
without the file, requests without a version go to the newest AVAILABLE version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from service.repository.base import MODEL_NAME_PATTERN


@dataclass(frozen=True)
class ServingConfig:
    default: int | str | None = None
    labels: Mapping[str, int] = field(default_factory=dict)

    def default_version(self, available: set[int]) -> int | None:
        """The version default requests go to, or the newest available one when the file names none usable."""
        wanted = self.labels.get(self.default) if isinstance(self.default, str) else self.default
        if wanted is not None and wanted in available:
            return wanted
        return max(available) if available else None


def parse_serving_config(data: bytes) -> ServingConfig:
    """Parse and validate serving.json; ValueError names what is wrong."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"serving.json is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("serving.json must be a JSON object")
    labels_raw = document.get("labels", {})
    if not isinstance(labels_raw, dict):
        raise ValueError("serving.json 'labels' must be an object of label -> version")
    labels: dict[str, int] = {}
    for label, version in labels_raw.items():
        if not MODEL_NAME_PATTERN.fullmatch(label) or label.isdigit():
            raise ValueError(f"serving.json label {label!r} is not a valid label name")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"serving.json label {label!r} must map to a positive version number")
        labels[label] = version
    default = document.get("default")
    if default is not None and not (
        (isinstance(default, int) and not isinstance(default, bool) and default >= 1)
        or (isinstance(default, str) and default in labels)
    ):
        raise ValueError("serving.json 'default' must be a positive version or one of its labels")
    return ServingConfig(default=default, labels=labels)
