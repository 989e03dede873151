"""MANIFEST.json: every file of a version with its size and sha256, written last by ``rtserve push``.

Format::

    {"format": 1, "files": [{"path": "saved_model.pb", "size": 1234, "sha256": "<64 hex>"}, ...]}

Paths are relative posix paths, sorted; MANIFEST.json itself is not listed. A folder matches its manifest
when it holds exactly the listed files, each with the listed size and sha256. A missing file and an unexpected
extra file are both DataLoss: the folder handed to the loader must be exactly what was published, and a stray
variables shard or asset would change what loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, Strict, TypeAdapter

from service.documents import Problem, validated
from service.errors import DataLoss, InvalidArgument, RepositoryError
from service.repository.base import MANIFEST_NAME, FileInfo, VersionListing, check_model_name, check_version

MANIFEST_FORMAT = 1
_CHUNK_BYTES = 1024 * 1024


def _entry_path(path: str) -> str:
    if not is_safe_relative_path(path) or path == MANIFEST_NAME:
        raise ValueError("unsafe or invalid path")
    return path


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a version. The annotations are MANIFEST.json's rules, applied when a manifest is parsed."""

    path: Annotated[str, Strict(), AfterValidator(_entry_path)]
    size: Annotated[int, Strict(), Field(ge=0)]  # strict: "size": true or "3" is not a size
    sha256: Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True)
class Manifest:
    files: tuple[ManifestEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def sizes(self) -> dict[str, int]:
        return {entry.path: entry.size for entry in self.files}


def is_safe_relative_path(path: str) -> bool:
    """True for a relative posix path that stays inside its folder: not absolute, no '..' or empty part."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def listed_files(listing: VersionListing, where: str) -> Iterator[FileInfo]:
    """The files of ``listing`` for a backend to fetch, refusing names that could escape their folder."""
    check_model_name(listing.model)
    check_version(listing.version)
    for info in listing.files:
        if not is_safe_relative_path(info.path):
            raise RepositoryError(f"refusing unsafe path {info.path!r} in {where}")
        yield info


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``folder`` as (relative posix path, absolute path), sorted by path."""
    found: list[tuple[str, Path]] = []
    for directory, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            if path.is_file():
                found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


def payload_files(folder: Path) -> list[tuple[str, Path]]:
    """The files a version is made of: every file except a top-level MANIFEST.json."""
    return [(rel, path) for rel, path in folder_files(folder) if rel != MANIFEST_NAME]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(folder: Path) -> Manifest:
    """Describe every file of ``folder`` (MANIFEST.json excluded)."""
    return _describe(payload_files(folder))


def _describe(files: Iterable[tuple[str, Path]]) -> Manifest:
    return Manifest(tuple(ManifestEntry(rel, path.stat().st_size, sha256_file(path)) for rel, path in files))


def dump_manifest(manifest: Manifest) -> bytes:
    files = [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in manifest.files]
    return (json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n").encode("utf-8")


class _ManifestDocument(BaseModel):
    # Fields it does not know are ignored, as they always were: a newer push may add some.
    format: Literal[1]  # MANIFEST_FORMAT; like before, 1.0 and true are equal to it
    files: list[ManifestEntry]


_MANIFEST = TypeAdapter(_ManifestDocument)


def parse_manifest(data: bytes) -> Manifest:
    """Parse MANIFEST.json; anything malformed or unsafe is DataLoss with a message naming the problem."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataLoss(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    files = validated(_MANIFEST, document, _explain, DataLoss).files
    entries: dict[str, ManifestEntry] = {}
    for entry in files:
        if entries.setdefault(entry.path, entry) is not entry:
            raise DataLoss(f"{MANIFEST_NAME} lists {entry.path!r} more than once")
    return Manifest(tuple(entries[path] for path in sorted(entries)))


def _explain(problem: Problem) -> str:
    match problem.loc:
        case ("format", *_):
            return f"{MANIFEST_NAME} has format {problem.value!r}, expected {MANIFEST_FORMAT}"
        case ("files",):
            return f"{MANIFEST_NAME} 'files' must be a list"
        case ("files", int(index)):
            return f"{MANIFEST_NAME} files[{index}] must be an object"
        case ("files", int(index), "path", *_):
            return f"{MANIFEST_NAME} files[{index}] has an unsafe or invalid path {problem.value!r}"
        case ("files", int(index), str(field), *_):
            path = problem.find(("files", index, "path"))
            return f"{MANIFEST_NAME} files[{index}] ({path}) has an invalid {field} {problem.value!r}"
    return f"{MANIFEST_NAME} must be a JSON object"


def check_sizes(manifest: Manifest, actual: Mapping[str, int]) -> None:
    """Compare sizes (path -> bytes, MANIFEST.json excluded) with the manifest; DataLoss names the file."""
    expected = manifest.sizes()
    for path, size in expected.items():
        if path not in actual:
            raise DataLoss(f"file {path!r} listed in {MANIFEST_NAME} is missing")
        if actual[path] != size:
            raise DataLoss(f"file {path!r} has {actual[path]} bytes, {MANIFEST_NAME} says {size}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise DataLoss(f"file {extra[0]!r} is not listed in {MANIFEST_NAME}")


def verify_folder(folder: Path, manifest: Manifest) -> None:
    """Raise DataLoss naming the first file of ``folder`` that does not match ``manifest``."""
    files = dict(payload_files(folder))
    check_sizes(manifest, {rel: path.stat().st_size for rel, path in files.items()})
    for entry in manifest.files:
        if sha256_file(files[entry.path]) != entry.sha256:
            raise DataLoss(f"file {entry.path!r} does not match its sha256 in {MANIFEST_NAME}")


def read_manifest(folder: Path) -> Manifest:
    """Parse ``folder/MANIFEST.json``; a missing file is DataLoss."""
    try:
        data = (folder / MANIFEST_NAME).read_bytes()
    except FileNotFoundError as exc:
        raise DataLoss(f"{MANIFEST_NAME} is missing from {folder}") from exc
    return parse_manifest(data)


@dataclass(frozen=True)
class UploadPlan:
    """What a backend uploads for one version: the payload files, then the manifest last."""

    files: tuple[tuple[str, Path], ...]
    manifest: Manifest

    @property
    def manifest_bytes(self) -> bytes:
        return dump_manifest(self.manifest)


def plan_upload(source: Path) -> UploadPlan:
    """Hash ``source`` once; a MANIFEST.json already in ``source`` is ignored and written afresh."""
    if not source.is_dir():
        raise InvalidArgument(f"{source} is not a folder")
    files = tuple(payload_files(source))
    if not files:
        raise InvalidArgument(f"{source} holds no files")
    return UploadPlan(files, _describe(files))
