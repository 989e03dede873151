"""One model's base location (TF Serving's ``base_path``) seen as a repository that holds that model alone.

A repository root holds model folders (``<root>/<model>/<version>``); a base path holds version folders directly
(``<base>/<version>``). The view opens the base path's parent with the usual backend and answers for the base
folder under the model's own name, so listings, downloads, the cache and ``serving.json`` work unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from service.errors import NotFound
from service.repository.base import ProgressCallback, Repository, VersionListing


class ModelBase:
    """``<parent>/<folder>/<version>/...`` served as model ``name``."""

    def __init__(self, parent: Repository, folder: str, name: str) -> None:
        self.parent = parent
        self.folder = folder
        self.name = name

    @property
    def uri(self) -> str:
        return f"{self.parent.uri.rstrip('/')}/{self.folder}"

    def list_models(self) -> list[str]:
        return [self.name]

    def list_versions(self, model: str) -> dict[int, VersionListing]:
        if model != self.name:
            return {}
        listings = self.parent.list_versions(self.folder)
        return {version: replace(listing, model=model) for version, listing in listings.items()}

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        self.parent.download_version(replace(listing, model=self._folder(listing.model)), destination, progress)

    def upload_version(self, model: str, version: int, source: Path, progress: ProgressCallback | None = None) -> None:
        self.parent.upload_version(self._folder(model), version, source, progress)

    def read_model_file(self, model: str, name: str, max_bytes: int | None = None) -> bytes | None:
        return self.parent.read_model_file(self._folder(model), name, max_bytes)

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        self.parent.write_model_file(self._folder(model), name, data)

    def _folder(self, model: str) -> str:
        if model != self.name:
            raise NotFound(f"{self.uri} holds model {self.name!r} only, not {model!r}")
        return self.folder
