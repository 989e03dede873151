"""The download cache: verified folders renamed into place, reuse, clean-up after failures, pruning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.errors import DataLoss, RepositoryError
from service.repository.base import MANIFEST_NAME, FileInfo, ProgressCallback, VersionListing
from service.repository.cache import cached_name, clean_stale_downloads, fetch_version, prune_cache
from service.repository.local import LocalRepository


class CountingRepository(LocalRepository):
    """A LocalRepository that counts downloads and can be told to fail one half-way."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads = 0
        self.fail_with: Exception | None = None

    def download_version(
        self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
    ) -> None:
        self.downloads += 1
        if self.fail_with is not None:
            (destination / "partial").write_bytes(b"half a file")
            raise self.fail_with
        super().download_version(listing, destination, progress)


@pytest.fixture
def repo(tmp_path: Path) -> CountingRepository:
    return CountingRepository(tmp_path / "models")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def publish(repo: LocalRepository, model: str, version: int, content: bytes = b"graph") -> VersionListing:
    source = repo.root.parent / f"src-{model}-{version}"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(content)
    (source / "variables" / "variables.index").write_bytes(b"index")
    repo.upload_version(model, version, source)
    return repo.list_versions(model)[version]


def write_version_without_manifest(repo: LocalRepository, model: str, version: int) -> VersionListing:
    folder = repo.root / model / str(version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"foreign tool")
    return repo.list_versions(model)[version]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".tmp-")) if cache.exists() else []


def test_fetch_returns_a_verified_folder_named_after_version_and_listing(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    folder = fetch_version(repo, listing, cache)
    assert folder == cache / "iris" / cached_name(listing)
    assert folder.name.startswith("1-") and len(folder.name) == len("1-") + 12
    assert (folder / "saved_model.pb").read_bytes() == b"graph"
    assert (folder / "variables" / "variables.index").read_bytes() == b"index"
    assert (folder / MANIFEST_NAME).is_file()
    assert leftovers(cache) == []


def test_fetch_reuses_a_cached_folder_without_downloading(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    first = fetch_version(repo, listing, cache)
    second = fetch_version(repo, listing, cache)
    assert first == second
    assert repo.downloads == 1


def test_a_rewritten_version_is_fetched_into_a_new_folder(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    first = fetch_version(repo, listing, cache)
    changed = VersionListing("iris", 1, tuple(FileInfo(f.path, f.size, f.marker + "0") for f in listing.files))
    second = fetch_version(repo, changed, cache)
    assert first != second
    assert repo.downloads == 2


def test_cached_name_depends_only_on_the_fingerprint() -> None:
    files = (FileInfo("a", 1, "m1"), FileInfo("b", 2, "m2"))
    same = VersionListing("iris", 4, files)
    reordered = VersionListing("iris", 4, files[::-1])
    resized = VersionListing("iris", 4, (FileInfo("a", 3, "m1"), files[1]))
    assert cached_name(same) == cached_name(reordered)
    assert cached_name(same) != cached_name(resized)
    assert cached_name(same).startswith("4-")


def test_tampered_file_is_data_loss_and_leaves_nothing_behind(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1, content=b"graph")
    (repo.root / "iris" / "1" / "saved_model.pb").write_bytes(b"GRAPH")
    with pytest.raises(DataLoss, match=re.escape("iris version 1: file 'saved_model.pb' does not match its sha256")):
        fetch_version(repo, listing, cache)
    assert leftovers(cache) == []
    assert not (cache / "iris" / cached_name(listing)).exists()


def test_an_extra_file_beside_the_manifest_is_data_loss(repo: CountingRepository, cache: Path) -> None:
    publish(repo, "iris", 1)
    (repo.root / "iris" / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"stray")
    listing = repo.list_versions("iris")[1]
    with pytest.raises(DataLoss, match=re.escape("'variables/variables.data-00000-of-00001' is not listed")):
        fetch_version(repo, listing, cache)
    assert leftovers(cache) == []


def test_a_file_that_changed_size_since_listing_is_data_loss(repo: CountingRepository, cache: Path) -> None:
    listing = write_version_without_manifest(repo, "iris", 1)
    (repo.root / "iris" / "1" / "saved_model.pb").write_bytes(b"rewritten after the listing")
    with pytest.raises(DataLoss, match=re.escape("'saved_model.pb' has 27 bytes after download, the listing says 12")):
        fetch_version(repo, listing, cache)
    assert leftovers(cache) == []


def test_a_listing_without_manifest_is_accepted_as_is(repo: CountingRepository, cache: Path) -> None:
    listing = write_version_without_manifest(repo, "iris", 1)
    assert not listing.has_manifest
    folder = fetch_version(repo, listing, cache)
    assert sorted(p.name for p in folder.iterdir()) == ["saved_model.pb"]


def test_a_corrupt_manifest_is_data_loss(repo: CountingRepository, cache: Path) -> None:
    publish(repo, "iris", 1)
    (repo.root / "iris" / "1" / MANIFEST_NAME).write_bytes(b'{"format": 1, "files": [{"path": "../x"}]}')
    with pytest.raises(DataLoss, match=re.escape("unsafe or invalid path '../x'")):
        fetch_version(repo, repo.list_versions("iris")[1], cache)
    assert leftovers(cache) == []


def test_a_failed_download_removes_the_temporary_folder(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    repo.fail_with = RepositoryError("S3 download s3://b/iris/1/saved_model.pb failed: timeout")
    with pytest.raises(RepositoryError, match=re.escape("timeout")):
        fetch_version(repo, listing, cache)
    assert leftovers(cache) == []
    assert not (cache / "iris").exists() or list((cache / "iris").iterdir()) == []

    repo.fail_with = None  # the next attempt starts clean and succeeds
    assert (fetch_version(repo, listing, cache) / "saved_model.pb").is_file()


def test_a_listing_with_an_unsafe_path_is_refused(repo: CountingRepository, cache: Path) -> None:
    listing = VersionListing("iris", 1, (FileInfo("../../etc/passwd", 10, "m"),))
    with pytest.raises(RepositoryError, match=re.escape("unsafe path")):
        fetch_version(repo, listing, cache)
    assert leftovers(cache) == []


def test_fetch_reports_progress(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    seen: list[int] = []
    fetch_version(repo, listing, cache, seen.append)
    assert sum(seen) == listing.total_bytes


def test_prune_keeps_only_what_is_loaded(repo: CountingRepository, cache: Path) -> None:
    one = fetch_version(repo, publish(repo, "iris", 1), cache)
    two = fetch_version(repo, publish(repo, "iris", 2), cache)
    other = fetch_version(repo, publish(repo, "mnist", 1), cache)
    unrelated = cache / "iris" / "notes"
    unrelated.mkdir()

    assert prune_cache(cache, "iris", {two}) == [one]
    assert not one.exists()
    assert two.is_dir() and other.is_dir() and unrelated.is_dir()
    assert prune_cache(cache, "iris", {two}) == []
    assert prune_cache(cache, "absent", set()) == []


def test_prune_never_touches_a_repository_layout(tmp_path: Path) -> None:
    # cache_dir pointed at a repository by mistake: "<version>" folders do not look like cache entries.
    (tmp_path / "iris" / "1").mkdir(parents=True)
    assert prune_cache(tmp_path, "iris", set()) == []
    assert (tmp_path / "iris" / "1").is_dir()


def test_clean_stale_downloads(repo: CountingRepository, cache: Path) -> None:
    kept = fetch_version(repo, publish(repo, "iris", 1), cache)
    stale = cache / ".tmp-iris-2-deadbeef"
    (stale / "variables").mkdir(parents=True)
    (stale / "variables" / "half").write_bytes(b"x")
    assert clean_stale_downloads(cache) == [stale]
    assert not stale.exists()
    assert kept.is_dir()
    assert clean_stale_downloads(cache / "absent") == []


def test_a_concurrent_fetch_that_finished_first_wins(repo: CountingRepository, cache: Path) -> None:
    listing = publish(repo, "iris", 1)
    final = cache / "iris" / cached_name(listing)

    class Racing(CountingRepository):
        def download_version(
            self, listing: VersionListing, destination: Path, progress: ProgressCallback | None = None
        ) -> None:
            super().download_version(listing, destination, progress)
            final.mkdir(parents=True)
            (final / "saved_model.pb").write_bytes(b"theirs")

    assert fetch_version(Racing(repo.root), listing, cache) == final
    assert (final / "saved_model.pb").read_bytes() == b"theirs"
    assert leftovers(cache) == []
