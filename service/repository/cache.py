"""The local cache of downloaded versions: ``<cache_dir>/<model>/<version>-<listing hash>``.

A version is downloaded into ``<cache_dir>/.tmp-<model>-<version>-<random>``, checked, and only then renamed
into place, so a cached folder is always complete and verified. The listing hash in the name means a version
rewritten in the repository is downloaded afresh instead of being mistaken for the cached copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from service.errors import DataLoss
from service.repository.base import (
    ProgressCallback,
    Repository,
    VersionListing,
    check_model_name,
    check_version,
)
from service.repository.local import TEMP_PREFIX, temp_sibling
from service.repository.manifest import folder_files, read_manifest, verify_folder

logger = logging.getLogger(__name__)

_CACHED_NAME = re.compile(r"[1-9][0-9]*-[0-9a-f]{12}")


def cached_name(listing: VersionListing) -> str:
    """``<version>-<first 12 hex digits of the sha256 of the listing fingerprint>``."""
    text = json.dumps(listing.fingerprint(), separators=(",", ":"))
    return f"{listing.version}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def fetch_version(
    repository: Repository, listing: VersionListing, cache_dir: Path, progress: ProgressCallback | None = None
) -> Path:
    """A local folder holding ``listing``'s files, verified against its manifest when it has one.

    A listing without a manifest is accepted as it is (the manager decides when such a version is complete).
    Raises DataLoss or RepositoryError, leaving no temporary folder behind.
    """
    check_model_name(listing.model)
    check_version(listing.version)
    final = cache_dir / listing.model / cached_name(listing)
    if final.is_dir():
        return final
    temp = temp_sibling(cache_dir, f"{listing.model}-{listing.version}")
    try:
        repository.download_version(listing, temp, progress)
        check_download(listing, temp)
        final.parent.mkdir(parents=True, exist_ok=True)
        return _move_into_place(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def check_download(listing: VersionListing, folder: Path) -> None:
    """Every listed file arrived with its listed size, and matches the manifest when there is one."""
    actual = {rel: path.stat().st_size for rel, path in folder_files(folder)}
    for info in listing.files:
        if actual.get(info.path) != info.size:
            raise DataLoss(
                f"{listing.model} version {listing.version}: file {info.path!r} has "
                f"{actual.get(info.path, 'no')} bytes after download, the listing says {info.size}"
            )
    if listing.has_manifest:
        try:
            verify_folder(folder, read_manifest(folder))
        except DataLoss as exc:
            raise DataLoss(f"{listing.model} version {listing.version}: {exc.message}") from exc


def _move_into_place(temp: Path, final: Path) -> Path:
    try:
        temp.rename(final)
    except OSError:
        # Another fetch of the same listing finished first; its folder is just as good.
        if not final.is_dir():
            raise
    return final


def prune_cache(cache_dir: Path, model: str, keep: set[Path]) -> list[Path]:
    """Delete the cached versions of ``model`` that are not in ``keep``; returns what was deleted.

    Only folders named like ``<version>-<hash>`` are touched, so a misconfigured cache_dir that points at a
    repository folder loses nothing.
    """
    check_model_name(model)
    model_dir = cache_dir / model
    if not model_dir.is_dir():
        return []
    kept = {path.resolve() for path in keep}
    removed = []
    for entry in sorted(model_dir.iterdir()):
        if _CACHED_NAME.fullmatch(entry.name) and entry.is_dir() and entry.resolve() not in kept:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def clean_stale_downloads(cache_dir: Path) -> list[Path]:
    """Delete ``.tmp-*`` folders left by a process that died mid-download; call once at start."""
    if not cache_dir.is_dir():
        return []
    stale = sorted(p for p in cache_dir.iterdir() if p.name.startswith(TEMP_PREFIX) and p.is_dir())
    for path in stale:
        logger.info("removing stale download %s", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale
