"""The names a model repository may hold: model names and versions, by strict patterns.

A leaf: the repository, routing (serving.json) and the model set all check names by these, and request data is
never joined into a path or a key unless it matches them.
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")


def is_model_name(text: str) -> bool:
    return MODEL_NAME_PATTERN.fullmatch(text) is not None and ".." not in text


def is_version(text: str) -> bool:
    return VERSION_PATTERN.fullmatch(text) is not None
