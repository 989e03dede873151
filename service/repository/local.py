"""A model repository on a local folder (development, tests, a mounted volume)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from service.errors import AlreadyExists, RepositoryError
from service.names import is_model_name
from service.repository.base import (
    MANIFEST_NAME,
    FileInfo,
    ProgressCallback,
    VersionListing,
    WarnOnce,
    check_model_file_name,
    check_model_name,
    check_version,
    checked_folder,
    folder_version,
    pick_version_folders,
    unless_plain,
)
from service.repository.manifest import folder_files, listed_files, plan_upload

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024
TEMP_PREFIX = ".tmp-"


def temp_sibling(parent: Path, label: str) -> Path:
    """Create and return a new empty folder ``parent/.tmp-<label>-<random>`` (mode from the umask)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{TEMP_PREFIX}{label}-{secrets.token_hex(6)}"
    path.mkdir()
    return path


def copy_file(source: Path, target: Path, progress: ProgressCallback | None) -> None:
    """Copy one file in chunks, reporting each chunk's size to ``progress``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK_BYTES):
            writer.write(chunk)
            if progress is not None:
                progress(len(chunk))


def write_atomically(target: Path, data: bytes) -> None:
    """Write a temporary file beside ``target``, flush it to disk, then os.replace it into place."""
    temp = target.with_name(f"{TEMP_PREFIX}{target.name}-{secrets.token_hex(6)}")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)


class LocalRepository:
    """``<root>/<model>/<version>/...`` on disk. Versions appear by renaming a finished temporary folder."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._warn = WarnOnce(log)

    @property
    def uri(self) -> str:
        return str(self._root)

    @property
    def root(self) -> Path:
        return self._root

    def list_models(self) -> list[str]:
        if not self._root.is_dir():
            raise RepositoryError(f"model repository folder {self._root} does not exist")
        return sorted(name for name in self._entries(self._root) if (self._root / name).is_dir())

    def list_versions(self, model: str) -> dict[int, VersionListing]:
        check_model_name(model)
        model_dir = self._root / model
        if not model_dir.is_dir():
            return {}
        folders = [name for name in self._entries(model_dir, pattern=_is_version_folder) if (model_dir / name).is_dir()]
        return {
            version: VersionListing(model, version, self._files(model_dir / name), unless_plain(name, version))
            for version, name in pick_version_folders(model, folders, self._warn).items()
        }

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        source = self._root / listing.model / checked_folder(listing)
        for info in listed_files(listing, str(source)):
            try:
                copy_file(source / info.path, destination / info.path, progress)
            except FileNotFoundError as exc:
                raise RepositoryError(f"{source / info.path} vanished while downloading") from exc
            except OSError as exc:
                raise RepositoryError(f"cannot copy {source / info.path}: {exc}") from exc

    def upload_version(self, model: str, version: int, source: Path, progress: ProgressCallback | None = None) -> None:
        target = self._version_dir(model, version)
        if target.exists():
            raise AlreadyExists(f"{model} version {version} already exists in {self.uri}")
        plan = plan_upload(source)
        temp = temp_sibling(target.parent, str(version))
        try:
            for rel, path in plan.files:
                copy_file(path, temp / rel, progress)
            # Last, like on S3, so that a folder with a manifest is always a whole version.
            (temp / MANIFEST_NAME).write_bytes(plan.manifest_bytes)
            self._publish(temp, target)
        except OSError as exc:
            raise RepositoryError(f"cannot upload {model} version {version} to {self.uri}: {exc}") from exc
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def read_model_file(self, model: str, name: str, max_bytes: int | None = None) -> bytes | None:
        path = self._model_file(model, name)
        try:
            with path.open("rb") as handle:
                return handle.read(-1 if max_bytes is None else max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RepositoryError(f"cannot read {path}: {exc}") from exc

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        path = self._model_file(model, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as exc:
            raise RepositoryError(f"cannot write {path}: {exc}") from exc

    def _publish(self, temp: Path, target: Path) -> None:
        try:
            # rename fails on a non-empty target, so a version that appeared meanwhile is never replaced.
            temp.rename(target)
        except OSError as exc:
            if target.exists():
                raise AlreadyExists(f"{target} already exists in {self.uri}") from exc
            raise RepositoryError(f"cannot publish {target}: {exc}") from exc

    def _version_dir(self, model: str, version: int) -> Path:
        check_model_name(model)
        check_version(version)
        return self._root / model / str(version)

    def _model_file(self, model: str, name: str) -> Path:
        check_model_name(model)
        check_model_file_name(name)
        return self._root / model / name

    @staticmethod
    def _entries(folder: Path, pattern: Callable[[str], bool] = is_model_name) -> list[str]:
        """Names in ``folder`` that match ``pattern``; temporary folders never do (they start with '.')."""
        try:
            return [entry.name for entry in folder.iterdir() if pattern(entry.name)]
        except OSError as exc:
            raise RepositoryError(f"cannot list {folder}: {exc}") from exc

    @staticmethod
    def _files(version_dir: Path) -> tuple[FileInfo, ...]:
        try:
            return tuple(_file_info(rel, path) for rel, path in folder_files(version_dir))
        except OSError as exc:
            raise RepositoryError(f"cannot list {version_dir}: {exc}") from exc


def _is_version_folder(name: str) -> bool:
    return folder_version(name) is not None


def _file_info(rel: str, path: Path) -> FileInfo:
    stat = path.stat()
    # mtime in ns changes whenever a file is rewritten, which is all a listing fingerprint needs.
    return FileInfo(rel, stat.st_size, str(stat.st_mtime_ns))
