"""The interface every repository backend implements, and the names it may hold.

Layout (TF Serving's): ``<root>/<model>/<version>/...`` with ``MANIFEST.json`` written last by
``rtserve push``, and an optional ``<root>/<model>/serving.json``. Model names and versions come only from
listings and must match the strict patterns of service/names.py; request data is never joined into a path or a key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from service.errors import InvalidArgument
from service.names import MODEL_NAME_PATTERN, is_model_name, is_version

MANIFEST_NAME = "MANIFEST.json"
SERVING_CONFIG_NAME = "serving.json"
# Version folders may carry leading zeros (TF Serving's own test models use 00000123): that folder is version 123.
VERSION_FOLDER_PATTERN = re.compile(r"0*([1-9][0-9]{0,17})")

# Called with the number of bytes just transferred; used to drive a progress bar.
ProgressCallback = Callable[[int], None]


def folder_version(name: str) -> int | None:
    """The version a folder name stands for (``00000123`` -> 123), or None when it names no version."""
    match = VERSION_FOLDER_PATTERN.fullmatch(name)
    return int(match.group(1)) if match is not None else None


def pick_version_folders(model: str, names: Iterable[str], warn: Callable[[str], None]) -> dict[int, str]:
    """version -> folder name for every folder name that stands for a version.

    Two folders naming the same number (``123`` and ``0123``) are one version: the one with the fewest leading
    zeros wins (then the lowest name), the same choice on every replica and every poll, and ``warn`` is told.
    """
    chosen: dict[int, str] = {}
    for name in sorted(names, key=lambda text: (len(text), text)):
        version = folder_version(name)
        if version is None:
            continue
        if version in chosen:
            kept = chosen[version]
            warn(f"model {model}: folders {kept!r} and {name!r} are both version {version}; serving {kept!r}")
            continue
        chosen[version] = name
    return chosen


def unless_plain(name: str, version: int) -> str:
    """The folder name a listing remembers: empty when it is the plain version number."""
    return "" if name == str(version) else name


def checked_folder(listing: VersionListing) -> str:
    """The listing's folder name, once its model, version and folder are checked to agree (safe to join)."""
    check_model_name(listing.model)
    check_version(listing.version)
    if folder_version(listing.folder_name) != listing.version:
        raise InvalidArgument(f"folder {listing.folder_name!r} is not version {listing.version}")
    return listing.folder_name


class WarnOnce:
    """Logs each distinct warning once per instance, so that a problem seen at every poll is said once."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def __call__(self, message: str) -> None:
        if message not in self._seen:
            self._seen.add(message)
            self._logger.warning("%s", message)


def check_model_name(model: str) -> None:
    """Raise InvalidArgument unless ``model`` is safe to join into a path or a key."""
    if not is_model_name(model):
        pattern = MODEL_NAME_PATTERN.pattern
        raise InvalidArgument(f"invalid model name {model!r}: expected {pattern} without '..'")


def check_version(version: int) -> None:
    """Raise InvalidArgument unless ``version`` is a positive version number that matches VERSION_PATTERN."""
    if isinstance(version, bool) or not isinstance(version, int) or not is_version(str(version)):
        raise InvalidArgument(f"invalid version {version!r}: expected an integer from 1 to 10^18-1")


def check_model_file_name(name: str) -> None:
    """Raise InvalidArgument unless ``name`` is a plain file name beside the versions, e.g. serving.json."""
    # Model names and model-level file names obey the same rule: one path component, no '..'.
    if not is_model_name(name) or folder_version(name) is not None:
        raise InvalidArgument(f"invalid model file name {name!r}")


@dataclass(frozen=True)
class FileInfo:
    """One file of a version: path relative to the version folder (posix), size, and a change marker."""

    path: str
    size: int
    marker: str  # ETag on S3, mtime in nanoseconds on disk: changes when the file is rewritten


@dataclass(frozen=True)
class VersionListing:
    """What the repository holds for one version right now."""

    model: str
    version: int
    files: tuple[FileInfo, ...]
    folder: str = ""  # the folder's name when it differs from str(version), e.g. 00000123

    @property
    def folder_name(self) -> str:
        return self.folder or str(self.version)

    @property
    def has_manifest(self) -> bool:
        return any(f.path == MANIFEST_NAME for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> tuple[tuple[str, int, str], ...]:
        """Equal across two polls only when no file was added, removed or rewritten in between."""
        return tuple(sorted((f.path, f.size, f.marker) for f in self.files))


class Repository(Protocol):
    """A model repository backend. Every method raises RepositoryError when the store cannot be reached."""

    @property
    def uri(self) -> str: ...

    def list_models(self) -> list[str]:
        """Model names (folders matching MODEL_NAME_PATTERN) under the root, sorted."""
        ...

    def list_versions(self, model: str) -> dict[int, VersionListing]:
        """Every version folder of a model (names matching VERSION_FOLDER_PATTERN) with its files."""
        ...

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        """Copy every listed file into ``destination`` (an existing empty folder), keeping relative paths."""
        ...

    def upload_version(self, model: str, version: int, source: Path, progress: ProgressCallback | None = None) -> None:
        """Copy a SavedModel folder into the repository, writing MANIFEST.json last."""
        ...

    def read_model_file(self, model: str, name: str, max_bytes: int | None = None) -> bytes | None:
        """A model-level file such as serving.json; None when absent.

        With ``max_bytes``, at most ``max_bytes + 1`` bytes are read, so a caller can tell a file over its limit
        without holding all of it.
        """
        ...

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        """Write a model-level file such as serving.json, replacing it atomically where the store allows."""
        ...
