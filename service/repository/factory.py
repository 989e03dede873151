"""Pick the repository backend from a URI: ``s3://bucket/prefix`` or a folder (optionally ``file://``)."""

from __future__ import annotations

from pathlib import Path

from service.repository.base import Repository
from service.repository.local import LocalRepository
from service.repository.s3 import S3Repository
from service.settings import S3Settings

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"


def open_repository(uri: str, s3: S3Settings) -> Repository:
    """The backend for ``uri``; ValueError for an ``s3://`` URI without a bucket."""
    if uri.startswith(S3_SCHEME):
        bucket, _, prefix = uri[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"repository URI {uri!r} names no bucket: expected s3://bucket[/prefix]")
        return S3Repository(bucket, prefix, s3)
    path = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    if not path:
        raise ValueError(f"repository URI {uri!r} names no folder")
    return LocalRepository(Path(path).expanduser())
