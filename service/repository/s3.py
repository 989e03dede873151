"""A model repository in an S3-compatible bucket (AWS S3, MinIO, moto), through boto3.

Keys: ``<prefix>/<model>/<version>/<path>``. Credentials come from boto3's standard chain (AWS_* variables,
shared files, instance roles), never from Settings. Every botocore/boto3 failure becomes a RepositoryError
with a one-line message that names the bucket/key and the cause.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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
from service.repository.manifest import is_safe_relative_path, listed_files, plan_upload
from service.settings import S3Settings

log = logging.getLogger(__name__)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def make_s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client from S3Settings; typed Any because the mypy-boto3-s3 stubs are optional."""
    config = Config(
        s3={"addressing_style": settings.addressing_style},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        # total_max_attempts counts the first try, matching S3Settings.max_attempts >= 1.
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
    )
    # A session per client: boto3's module-level default session is shared global state.
    session = boto3.session.Session(region_name=settings.region)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def describe_error(exc: BaseException) -> str:
    """One line naming the cause of a botocore/boto3 error."""
    cause = getattr(exc, "last_exception", None) or exc  # boto3's RetriesExceededError wraps the real one
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"


def is_not_found(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES


class S3Repository:
    """``s3://<bucket>/<prefix>/<model>/<version>/...``; the manifest is uploaded after every other file."""

    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._client = make_s3_client(settings)
        self._warn = WarnOnce(log)

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    def list_models(self) -> list[str]:
        root = self._folder()
        names: set[str] = set()
        for page in self._pages(root, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"])[len(root) :].rstrip("/")
                if is_model_name(name):
                    names.add(name)
        return sorted(names)

    def list_versions(self, model: str) -> dict[int, VersionListing]:
        check_model_name(model)
        base = self._folder(model)
        files: dict[str, list[FileInfo]] = {}
        for page in self._pages(base):
            for item in page.get("Contents", []):
                folder, _, path = str(item["Key"])[len(base) :].partition("/")
                # Skips model-level files (serving.json), foreign names, folder markers and unsafe keys.
                if folder_version(folder) is not None and is_safe_relative_path(path):
                    files.setdefault(folder, []).append(FileInfo(path, int(item["Size"]), str(item["ETag"])))
        return {
            version: VersionListing(
                model, version, tuple(sorted(files[folder], key=lambda i: i.path)), unless_plain(folder, version)
            )
            for version, folder in pick_version_folders(model, files, self._warn).items()
        }

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        for info in listed_files(listing, self.uri):
            key = self._key(listing.model, checked_folder(listing), info.path)
            target = destination / info.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._errors("download", key):
                self._client.download_file(self._bucket, key, str(target), Callback=progress)

    def upload_version(self, model: str, version: int, source: Path, progress: ProgressCallback | None = None) -> None:
        check_model_name(model)
        check_version(version)
        folder = self._folder(model, str(version))
        with self._errors("list", folder):
            existing = self._client.list_objects_v2(Bucket=self._bucket, Prefix=folder, MaxKeys=1)
        if existing.get("KeyCount", 0) > 0:
            raise AlreadyExists(f"{model} version {version} already exists in {self.uri}")
        plan = plan_upload(source)
        for rel, path in plan.files:
            key = folder + rel
            with self._errors("upload", key):
                self._client.upload_file(str(path), self._bucket, key, Callback=progress)
        # Last: its presence is what marks the version complete.
        self._put(folder + MANIFEST_NAME, plan.manifest_bytes)

    def read_model_file(self, model: str, name: str, max_bytes: int | None = None) -> bytes | None:
        key = self._key(*self._model_file(model, name))
        limit = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes}"}
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key, **limit)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise self._error("read", key, exc) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise self._error("read", key, exc) from exc

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        # A single PUT replaces an object atomically: readers see the old or the new bytes, never a mix.
        self._put(self._key(*self._model_file(model, name)), data)

    def _put(self, key: str, data: bytes) -> None:
        with self._errors("upload", key):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=data)

    @staticmethod
    def _model_file(model: str, name: str) -> tuple[str, str]:
        check_model_name(model)
        check_model_file_name(name)
        return model, name

    def _key(self, *parts: str) -> str:
        return "/".join(part for part in (self._prefix, *parts) if part)

    def _folder(self, *parts: str) -> str:
        """The key prefix of a folder, ending in '/'; the bucket root is ''."""
        key = self._key(*parts)
        return f"{key}/" if key else ""

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        arguments: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter is not None:
            arguments["Delimiter"] = delimiter
        with self._errors("list", prefix):
            yield from self._client.get_paginator("list_objects_v2").paginate(**arguments)

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._error(action, key, exc) from exc

    def _error(self, action: str, key: str, exc: Exception) -> RepositoryError:
        return RepositoryError(f"S3 {action} s3://{self._bucket}/{key} failed: {describe_error(exc)}")
