"""LocalRepository, the publish commands on it, and open_repository."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fakes import write_fake_saved_model
from service.errors import AlreadyExists, DataLoss, InvalidArgument, RepositoryError
from service.repository.base import MANIFEST_NAME, Repository
from service.repository.cache import fetch_version
from service.repository.factory import open_repository
from service.repository.local import LocalRepository
from service.repository.manifest import UploadPlan, parse_manifest, plan_upload
from service.repository.s3 import S3Repository
from service.settings import S3Settings
from service.tools.push import byte_progress, describe_repository, push_version

SavedModelFactory = Callable[[str], Path]


@pytest.fixture
def saved_model(tmp_path: Path) -> SavedModelFactory:
    return lambda seed: write_fake_saved_model(tmp_path / f"source-{seed}", seed)


@pytest.fixture
def repo(tmp_path: Path) -> LocalRepository:
    root = tmp_path / "models"
    root.mkdir()
    return LocalRepository(root)


def read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_satisfies_the_repository_protocol(repo: LocalRepository) -> None:
    backend: Repository = repo
    assert backend.uri == str(repo.root)


def test_push_list_fetch_round_trip(repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path) -> None:
    source = saved_model("a")
    assert push_version(repo, source, "iris") == 1

    assert repo.list_models() == ["iris"]
    versions = repo.list_versions("iris")
    assert list(versions) == [1]
    listing = versions[1]
    assert listing.has_manifest
    assert {f.path for f in listing.files} == set(read_tree(source)) | {MANIFEST_NAME}

    fetched = fetch_version(repo, listing, tmp_path / "cache")
    tree = read_tree(fetched)
    manifest = parse_manifest(tree.pop(MANIFEST_NAME))
    assert tree == read_tree(source)
    assert [e.path for e in manifest.files] == sorted(tree)


def test_upload_leaves_no_temporary_folder(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    push_version(repo, saved_model("a"), "iris")
    assert sorted(p.name for p in (repo.root / "iris").iterdir()) == ["1"]


def test_listing_ignores_names_that_do_not_match_the_patterns(
    repo: LocalRepository, saved_model: SavedModelFactory
) -> None:
    push_version(repo, saved_model("a"), "iris")
    for name in ("abc", "0", "v1", "01", "-3", ".tmp-2-0123abcd", "2 "):
        (repo.root / "iris" / name).mkdir()
        (repo.root / "iris" / name / "saved_model.pb").write_bytes(b"x")
    (repo.root / "iris" / "7").write_bytes(b"a file, not a version folder")
    (repo.root / "iris" / "serving.json").write_bytes(b"{}")
    for name in (".hidden", "..x", "a..b", "-lead", "bad name", ".tmp-iris-1-abcd"):
        (repo.root / name / "1").mkdir(parents=True)
    (repo.root / "loose-file").write_bytes(b"not a model folder")

    assert repo.list_models() == ["iris"]
    assert list(repo.list_versions("iris")) == [1]


@pytest.mark.parametrize("model", ["../x", "..", "a/b", "", "x..y", ".hidden"])
def test_unsafe_model_names_are_refused(repo: LocalRepository, model: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        repo.list_versions(model)
    with pytest.raises(InvalidArgument):
        repo.upload_version(model, 1, tmp_path)
    with pytest.raises(InvalidArgument):
        repo.read_model_file(model, "serving.json")


@pytest.mark.parametrize("name", ["../serving.json", "a/b", "..", "1", ""])
def test_unsafe_model_file_names_are_refused(repo: LocalRepository, name: str) -> None:
    with pytest.raises(InvalidArgument):
        repo.write_model_file("iris", name, b"{}")


def test_tampered_file_after_push_is_data_loss_naming_the_file(
    repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    push_version(repo, saved_model("a"), "iris")
    index = repo.root / "iris" / "1" / "variables" / "variables.index"
    index.write_bytes(b"INDEX:a")  # same size, other bytes

    with pytest.raises(DataLoss, match=r"iris version 1: file 'variables/variables.index' does not match"):
        fetch_version(repo, repo.list_versions("iris")[1], tmp_path / "cache")


def test_half_uploaded_version_is_listed_without_manifest(
    repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    push_version(repo, saved_model("a"), "iris")
    half = repo.root / "iris" / "2"
    (half / "variables").mkdir(parents=True)
    (half / "saved_model.pb").write_bytes(b"graph")

    versions = repo.list_versions("iris")
    assert versions[1].has_manifest
    assert not versions[2].has_manifest
    assert [f.path for f in versions[2].files] == ["saved_model.pb"]
    rows = describe_repository(repo, "iris")
    assert [(r.version, r.complete, r.manifest_ok) for r in rows] == [(1, True, True), (2, False, None)]


def test_next_free_version_counts_incomplete_versions(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    assert push_version(repo, saved_model("a"), "iris") == 1
    assert push_version(repo, saved_model("b"), "iris") == 2
    assert push_version(repo, saved_model("c"), "iris", version=10) == 10
    (repo.root / "iris" / "11").mkdir()  # half-uploaded: its number is taken all the same
    assert push_version(repo, saved_model("d"), "iris") == 12
    assert push_version(repo, saved_model("e"), "other") == 1
    assert sorted(repo.list_versions("iris")) == [1, 2, 10, 11, 12]


def test_push_refuses_to_overwrite_a_version(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    push_version(repo, saved_model("a"), "iris", version=3)
    before = read_tree(repo.root / "iris" / "3")

    with pytest.raises(AlreadyExists, match=re.escape("iris version 3 already exists")):
        push_version(repo, saved_model("b"), "iris", version=3)
    with pytest.raises(AlreadyExists):
        repo.upload_version("iris", 3, saved_model("c"))
    assert read_tree(repo.root / "iris" / "3") == before
    assert sorted(p.name for p in (repo.root / "iris").iterdir()) == ["3"]


def test_upload_never_replaces_a_folder_that_appears_meanwhile(
    repo: LocalRepository, saved_model: SavedModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def plan_then_race(source: Path) -> UploadPlan:
        # Another writer publishes version 1 after the existence check, while this upload is copying.
        (repo.root / "iris" / "1").mkdir(parents=True)
        (repo.root / "iris" / "1" / "theirs").write_bytes(b"x")
        return plan_upload(source)

    monkeypatch.setattr("service.repository.local.plan_upload", plan_then_race)
    with pytest.raises(AlreadyExists):
        repo.upload_version("iris", 1, saved_model("a"))
    assert read_tree(repo.root / "iris" / "1") == {"theirs": b"x"}
    assert sorted(p.name for p in (repo.root / "iris").iterdir()) == ["1"]


def test_push_validates_the_model_name_and_the_source(
    repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape("invalid model name '../x'")):
        push_version(repo, saved_model("a"), "../x")
    not_saved_model = tmp_path / "plain"
    not_saved_model.mkdir()
    (not_saved_model / "model.h5").write_bytes(b"keras")
    with pytest.raises(InvalidArgument, match=re.escape("no saved_model.pb")):
        push_version(repo, not_saved_model, "iris")
    with pytest.raises(InvalidArgument, match=re.escape("is not a folder")):
        push_version(repo, tmp_path / "absent", "iris")
    with pytest.raises(InvalidArgument, match=re.escape("invalid version 0")):
        push_version(repo, saved_model("b"), "iris", version=0)
    assert repo.list_versions("iris") == {}


def test_upload_reports_progress_in_bytes(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    source = saved_model("a")
    seen: list[int] = []
    repo.upload_version("iris", 1, source, seen.append)
    assert sum(seen) == sum(len(data) for data in read_tree(source).values())


def test_describe_repository_reports_files_bytes_and_manifest_problems(
    repo: LocalRepository, saved_model: SavedModelFactory
) -> None:
    source = saved_model("a")
    push_version(repo, source, "iris")
    push_version(repo, saved_model("b"), "iris")
    push_version(repo, saved_model("c"), "mnist")
    (repo.root / "iris" / "2" / "saved_model.pb").write_bytes(b"truncated")

    rows = describe_repository(repo)
    assert [(r.model, r.version) for r in rows] == [("iris", 1), ("iris", 2), ("mnist", 1)]
    first = rows[0]
    assert first.files == 4
    assert first.bytes == sum(len(data) for data in read_tree(source).values())
    assert (first.complete, first.manifest_ok, first.problem) == (True, True, None)
    assert rows[1].manifest_ok is False
    assert rows[1].problem is not None and "'saved_model.pb' has 9 bytes" in rows[1].problem


def test_describe_reports_a_corrupt_manifest(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    push_version(repo, saved_model("a"), "iris")
    (repo.root / "iris" / "1" / MANIFEST_NAME).write_bytes(b"{broken")
    (row,) = describe_repository(repo, "iris")
    assert row.manifest_ok is False
    assert row.problem is not None and "not valid JSON" in row.problem


def test_model_files_read_write(repo: LocalRepository) -> None:
    assert repo.read_model_file("iris", "serving.json") is None
    repo.write_model_file("iris", "serving.json", b'{"default": 1}')
    repo.write_model_file("iris", "serving.json", json.dumps({"default": 2}).encode())
    assert repo.read_model_file("iris", "serving.json") == b'{"default": 2}'
    assert sorted(p.name for p in (repo.root / "iris").iterdir()) == ["serving.json"]
    # A model-level file is not a version and not a model.
    assert repo.list_versions("iris") == {}


def test_missing_root_is_a_repository_error(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "absent")
    with pytest.raises(RepositoryError, match=re.escape("does not exist")):
        repo.list_models()
    assert repo.list_versions("iris") == {}


def test_a_file_deleted_before_download_is_a_repository_error(
    repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    push_version(repo, saved_model("a"), "iris")
    listing = repo.list_versions("iris")[1]
    (repo.root / "iris" / "1" / "assets" / "labels.txt").unlink()
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(RepositoryError, match=re.escape("labels.txt vanished")):
        repo.download_version(listing, destination)


def test_listing_marker_changes_when_a_file_is_rewritten(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    push_version(repo, saved_model("a"), "iris")
    before = repo.list_versions("iris")[1].fingerprint()
    assert repo.list_versions("iris")[1].fingerprint() == before
    pb = repo.root / "iris" / "1" / "saved_model.pb"
    stat = pb.stat()
    pb.write_bytes(pb.read_bytes())
    os.utime(pb, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert repo.list_versions("iris")[1].fingerprint() != before


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("models", "models"), ("file:///srv/models", "/srv/models"), ("/abs/path", "/abs/path")],
)
def test_open_repository_opens_folders(uri: str, expected: str) -> None:
    repo = open_repository(uri, S3Settings.model_validate({}))
    assert isinstance(repo, LocalRepository)
    assert repo.root == Path(expected)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket/", "s3://bucket"),
        ("s3://bucket/team/models/", "s3://bucket/team/models"),
    ],
)
def test_open_repository_opens_buckets(uri: str, expected: str) -> None:
    # Building a client does not touch the network; region given so no AWS config is consulted.
    repo = open_repository(
        uri, S3Settings.model_validate({"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"})
    )
    assert isinstance(repo, S3Repository)
    assert repo.uri == expected


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "", "file://"])
def test_open_repository_rejects_uris_without_a_bucket_or_folder(uri: str) -> None:
    with pytest.raises(ValueError, match=re.escape("names no")):
        open_repository(uri, S3Settings.model_validate({}))


def test_byte_progress_is_a_callback_only_when_enabled() -> None:
    with byte_progress(10, "iris/1", enabled=False) as callback:
        assert callback is None
    with byte_progress(10, "iris/1", enabled=True) as callback:
        assert callback is not None
        callback(4)
        callback(6)


def test_push_with_a_progress_bar_publishes_the_same(repo: LocalRepository, saved_model: SavedModelFactory) -> None:
    assert push_version(repo, saved_model("a"), "iris", progress=True) == 1
    assert repo.list_versions("iris")[1].has_manifest


def test_version_folders_with_leading_zeros_are_their_number(
    repo: LocalRepository, saved_model: SavedModelFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = saved_model("a")
    (repo.root / "iris").mkdir()
    shutil.copytree(source, repo.root / "iris" / "00000123")  # as TF Serving's own test models are named
    shutil.copytree(saved_model("b"), repo.root / "iris" / "0000007")
    shutil.copytree(saved_model("c"), repo.root / "iris" / "007")  # the same number twice: fewest zeros wins
    (repo.root / "iris" / "000").mkdir()  # zero is no version, with or without zeros
    versions = repo.list_versions("iris")
    assert sorted(versions) == [7, 123]
    assert versions[123].folder_name == "00000123"
    assert versions[7].folder_name == "007"
    assert caplog.text.count("folders '007' and '0000007' are both version 7; serving '007'") == 1
    repo.list_versions("iris")  # the same duplicate at every poll is said once
    assert caplog.text.count("are both version 7") == 1
    fetched = fetch_version(repo, versions[123], tmp_path / "cache")
    assert fetched.name.startswith("123-")
    assert read_tree(fetched) == read_tree(source)
    assert push_version(repo, saved_model("d"), "iris") == 124  # the next free number counts them too


def test_a_model_file_named_like_a_zero_padded_version_is_refused(repo: LocalRepository) -> None:
    with pytest.raises(InvalidArgument, match="invalid model file name"):
        repo.read_model_file("iris", "0123")


def test_model_files_are_read_up_to_a_limit(repo: LocalRepository) -> None:
    repo.write_model_file("iris", "serving.json", b"x" * 1000)
    assert repo.read_model_file("iris", "serving.json", max_bytes=10) == b"x" * 11  # one more: over the limit
    assert repo.read_model_file("iris", "serving.json") == b"x" * 1000
