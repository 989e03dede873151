"""What ``rtserve push`` and ``rtserve ls`` do, apart from parsing arguments.

Errors are ServingError subclasses with one-line messages (InvalidArgument for a bad name or folder,
AlreadyExists for a version that is already published, RepositoryError when the store cannot be reached).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.errors import AlreadyExists, DataLoss, InvalidArgument
from service.observability.profile import DEFAULT_BINS, PROFILE_PATH, Profile, build_profile, dump_profile, load_samples
from service.repository.base import (
    MANIFEST_NAME,
    ProgressCallback,
    Repository,
    VersionListing,
    check_model_name,
    check_version,
)
from service.repository.manifest import Manifest, check_sizes, payload_files, read_manifest
from service.tensors import DEFAULT_SIGNATURE

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class VersionRow:
    """One line of ``rtserve ls``."""

    model: str
    version: int
    files: int  # payload files, MANIFEST.json not counted
    bytes: int  # payload bytes, MANIFEST.json not counted
    complete: bool  # MANIFEST.json is present
    manifest_ok: bool | None  # None without a manifest; sizes and names only, contents are not downloaded
    problem: str | None = None  # why manifest_ok is False


@contextmanager
def byte_progress(total: int, description: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A tqdm bar over ``total`` bytes, as a ProgressCallback; None when disabled.

    tqdm's ``disable=None`` also turns the bar off when stderr is not a terminal (CI, pipes).
    """
    if not enabled:
        yield None
        return
    bar = tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, disable=None)
    with bar:

        def advance(count: int) -> None:
            bar.update(count)

        yield advance


def check_saved_model(source: Path) -> None:
    if not source.is_dir():
        raise InvalidArgument(f"{source} is not a folder")
    if not any((source / name).is_file() for name in SAVED_MODEL_FILES):
        raise InvalidArgument(f"{source} is not a SavedModel folder: it has no saved_model.pb")


def next_version(repository: Repository, model: str) -> int:
    """One more than the highest version present (complete or not), or 1."""
    return max(repository.list_versions(model), default=0) + 1


def push_version(
    repository: Repository,
    source: Path,
    model: str,
    version: int | None = None,
    progress: bool = False,
    profile_data: Path | None = None,
    profile_bins: int = DEFAULT_BINS,
) -> int:
    """Publish the SavedModel folder ``source`` as ``model`` version ``version`` (next free one when None).

    With ``profile_data`` (training samples, see service/observability/profile.py) the version also gets a reference
    profile for drift monitoring at ``assets.extra/rtserve_profile.json``; ``source`` itself is not modified.
    Returns the version written. Never overwrites: an existing version raises AlreadyExists.
    """
    check_model_name(model)
    check_saved_model(source)
    if version is None:
        version = next_version(repository, model)
    else:
        check_version(version)
        if version in repository.list_versions(model):
            raise AlreadyExists(f"{model} version {version} already exists in {repository.uri}")
    if profile_data is None:
        _upload(repository, source, model, version, progress)
        return version
    profile = profile_of(source, profile_data, profile_bins)
    with tempfile.TemporaryDirectory(prefix="rtserve-push-") as folder:
        _upload(repository, stage_with_profile(source, profile, Path(folder)), model, version, progress)
    return version


def _upload(repository: Repository, source: Path, model: str, version: int, progress: bool) -> None:
    total = sum(path.stat().st_size for _rel, path in payload_files(source))
    with byte_progress(total, f"{model}/{version}", progress) as callback:
        repository.upload_version(model, version, source, callback)


def profile_of(source: Path, data: Path, bins: int = DEFAULT_BINS) -> Profile:
    """The reference profile of training samples ``data`` for the default signature of SavedModel ``source``."""
    # TensorFlow's protobufs describe the signature; imported only when a profile is asked for.
    from service.runtime.tensorflow import describe_saved_model

    try:
        signatures = describe_saved_model(source)
    except Exception as error:  # the loader's one-line cause: unreadable or not a SavedModel
        raise InvalidArgument(f"cannot read the signatures of {source}: {error}") from None
    signature = signatures.get(DEFAULT_SIGNATURE)
    if signature is None:
        raise InvalidArgument(f"{source} has no {DEFAULT_SIGNATURE!r} signature to profile the inputs of")
    return build_profile(signature, load_samples(data, signature), bins)


def stage_with_profile(source: Path, profile: Profile, staging: Path) -> Path:
    """``staging`` made to mirror ``source`` by symbolic links, plus the profile file (replacing any there)."""
    for rel, path in payload_files(source):
        if rel == PROFILE_PATH:
            continue
        link = staging / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    target = staging / PROFILE_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(dump_profile(profile))
    return staging


def describe_repository(repository: Repository, model: str | None = None) -> list[VersionRow]:
    """Every version of ``model`` (or of every model), sorted by model then version."""
    models = [model] if model is not None else repository.list_models()
    rows: list[VersionRow] = []
    for name in models:
        listings = repository.list_versions(name)  # refuses a name that does not match the pattern
        rows.extend(describe_version(repository, listings[version]) for version in sorted(listings))
    return rows


def describe_version(repository: Repository, listing: VersionListing) -> VersionRow:
    payload = {f.path: f.size for f in listing.files if f.path != MANIFEST_NAME}
    manifest_ok: bool | None = None
    problem = None
    if listing.has_manifest:
        try:
            check_sizes(fetch_manifest(repository, listing), payload)
            manifest_ok = True
        except DataLoss as exc:
            manifest_ok, problem = False, exc.message
    return VersionRow(
        listing.model,
        listing.version,
        len(payload),
        sum(payload.values()),
        listing.has_manifest,
        manifest_ok,
        problem,
    )


def fetch_manifest(repository: Repository, listing: VersionListing) -> Manifest:
    """Download and parse only the MANIFEST.json of ``listing``."""
    only_manifest = VersionListing(
        listing.model, listing.version, tuple(f for f in listing.files if f.path == MANIFEST_NAME)
    )
    with tempfile.TemporaryDirectory(prefix="rtserve-manifest-") as folder:
        repository.download_version(only_manifest, Path(folder))
        return read_manifest(Path(folder))
