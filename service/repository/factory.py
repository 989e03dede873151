"""Pick the repository backend from a URI: ``s3://bucket/prefix`` or a folder (optionally ``file://``).

A model's own base path (an explicit model set) opens as a view of its parent: see ``repository/view.py``.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import RepositoryError
from service.names import MODEL_NAME_PATTERN, is_model_name
from service.repository.base import Repository
from service.repository.local import LocalRepository
from service.repository.view import ModelBase
from service.settings import S3Settings

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"


def open_repository(uri: str, s3: S3Settings) -> Repository:
    """The backend for ``uri``; ValueError for an ``s3://`` URI without a bucket."""
    if uri.startswith(S3_SCHEME):
        bucket, _, prefix = uri[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"repository URI {uri!r} names no bucket: expected s3://bucket[/prefix]")
        # Imported here: boto3 is a tenth of a second or more of every cold start that reads a folder.
        from service.repository.s3 import S3Repository

        return S3Repository(bucket, prefix, s3)
    path = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    if not path:
        raise ValueError(f"repository URI {uri!r} names no folder")
    return LocalRepository(Path(path).expanduser())


def split_base_path(base_path: str) -> tuple[str, str]:
    """A model's base path as (the repository URI of its parent, its last folder); ValueError names the problem.

    The last folder becomes the key the versions are listed under, so it must be a plain name (no '..').
    """
    text = base_path.strip()
    if text.startswith(S3_SCHEME):
        bucket, _, prefix = text[len(S3_SCHEME) :].partition("/")
        parent_prefix, _, folder = prefix.strip("/").rpartition("/")
        if not bucket or not folder:
            raise ValueError(f"base path {base_path!r} names no folder: expected s3://bucket/[prefix/]model")
        parent = f"{S3_SCHEME}{bucket}/{parent_prefix}" if parent_prefix else f"{S3_SCHEME}{bucket}"
    else:
        path = text[len(FILE_SCHEME) :] if text.startswith(FILE_SCHEME) else text
        local = Path(path).expanduser()
        if not path or not local.name:
            raise ValueError(f"base path {base_path!r} names no folder")
        parent, folder = str(local.parent), local.name
    if not is_model_name(folder):
        raise ValueError(
            f"base path {base_path!r}: its last folder {folder!r} must match {MODEL_NAME_PATTERN.pattern} without '..'"
        )
    return parent, folder


def open_model_base(name: str, base_path: str, s3: S3Settings) -> ModelBase:
    """The repository view of one model whose version folders sit directly in ``base_path``."""
    parent, folder = split_base_path(base_path)
    return ModelBase(open_repository(parent, s3), folder, name)


def check_model_base(base: ModelBase) -> None:
    """RepositoryError unless the base path can be listed now (and, on disk, exists: S3 has no empty folders)."""
    if isinstance(base.parent, LocalRepository) and not (base.parent.root / base.folder).is_dir():
        raise RepositoryError(f"base path {base.uri} is not a folder")
    base.list_versions(base.name)
