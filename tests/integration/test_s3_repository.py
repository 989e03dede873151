"""S3Repository against moto's S3 server running as a real process on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from service.errors import AlreadyExists, DataLoss, RepositoryError
from service.repository.base import MANIFEST_NAME, Repository
from service.repository.cache import fetch_version
from service.repository.factory import open_repository
from service.repository.manifest import parse_manifest
from service.repository.s3 import S3Repository
from service.tools.push import describe_repository, push_version

if TYPE_CHECKING:  # only for annotations: importing conftest at run time would clash with other conftests
    from conftest import S3Server

pytestmark = pytest.mark.integration

SavedModelFactory = Callable[[str], Path]
# An outage must fail a call within the test settings' timeouts (1 s connect, a single attempt), not hang it.
OUTAGE_BUDGET_S = 10.0


def read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(params=["models", ""], ids=["prefix", "bucket-root"])
def repo(request: pytest.FixtureRequest, s3_server: S3Server) -> S3Repository:
    bucket = s3_server.create_bucket()
    backend = open_repository(f"s3://{bucket}/{request.param}", s3_server.settings())
    assert isinstance(backend, S3Repository)
    return backend


def key(repo: S3Repository, *parts: str) -> str:
    prefix = repo.uri.removeprefix("s3://").partition("/")[2]
    return "/".join(p for p in (prefix, *parts) if p)


def bucket_of(repo: S3Repository) -> str:
    return repo.uri.removeprefix("s3://").partition("/")[0]


def put(s3_server: S3Server, repo: S3Repository, object_key: str, data: bytes) -> None:
    s3_server.client().put_object(Bucket=bucket_of(repo), Key=object_key, Body=data)


def test_push_list_fetch_round_trip(repo: S3Repository, fake_saved_model: SavedModelFactory, tmp_path: Path) -> None:
    backend: Repository = repo
    source = fake_saved_model("a")
    assert push_version(backend, source, "iris") == 1
    assert push_version(backend, fake_saved_model("b"), "iris") == 2

    assert backend.list_models() == ["iris"]
    versions = backend.list_versions("iris")
    assert sorted(versions) == [1, 2]
    listing = versions[1]
    assert listing.has_manifest
    assert {f.path for f in listing.files} == set(read_tree(source)) | {MANIFEST_NAME}
    assert all(f.marker.strip('"') for f in listing.files)  # ETags

    seen: list[int] = []
    folder = fetch_version(backend, listing, tmp_path / "cache", seen.append)
    tree = read_tree(folder)
    manifest = parse_manifest(tree.pop(MANIFEST_NAME))
    assert tree == read_tree(source)
    assert [e.path for e in manifest.files] == sorted(tree)
    assert sum(seen) == listing.total_bytes


def test_manifest_is_uploaded_last(repo: S3Repository, fake_saved_model: SavedModelFactory) -> None:
    order: list[str] = []

    def record(params: dict[str, object], **_: object) -> None:
        order.append(str(params["Key"]))

    # Small files go up as single PutObject calls, whether through upload_file or put_object.
    repo._client.meta.events.register("provide-client-params.s3.PutObject", record)
    push_version(repo, fake_saved_model("a"), "iris")
    manifest_key = key(repo, "iris", "1", MANIFEST_NAME)
    assert len(set(order)) == 5
    assert order[-1] == manifest_key
    assert order.count(manifest_key) == 1


def test_listing_ignores_names_that_do_not_match_the_patterns(
    repo: S3Repository, s3_server: S3Server, fake_saved_model: SavedModelFactory
) -> None:
    push_version(repo, fake_saved_model("a"), "iris")
    for version in ("abc", "0", "v1", "01", "-3", ".tmp-2-0123"):
        put(s3_server, repo, key(repo, "iris", version, "saved_model.pb"), b"x")
    put(s3_server, repo, key(repo, "iris", "serving.json"), b"{}")
    put(s3_server, repo, key(repo, "iris", "7"), b"an object, not a version folder")
    put(s3_server, repo, key(repo, "iris", "1", "variables") + "/", b"")  # a console's folder marker
    for model in ("..", ".hidden", "a..b", "-lead", "bad name"):
        put(s3_server, repo, key(repo, model, "1", "saved_model.pb"), b"x")
    put(s3_server, repo, key(repo, "loose-object"), b"not a model folder")

    assert repo.list_models() == ["iris"]
    versions = repo.list_versions("iris")
    assert list(versions) == [1]
    assert "variables/" not in {f.path for f in versions[1].files}


def test_unsafe_keys_inside_a_version_are_not_listed(repo: S3Repository, s3_server: S3Server) -> None:
    put(s3_server, repo, key(repo, "iris", "1", "saved_model.pb"), b"graph")
    put(s3_server, repo, key(repo, "iris", "1", "a//b"), b"x")
    put(s3_server, repo, key(repo, "iris", "1", "variables", "..", "x"), b"x")
    assert [f.path for f in repo.list_versions("iris")[1].files] == ["saved_model.pb"]


def test_tampered_file_after_push_is_data_loss_naming_the_file(
    repo: S3Repository, s3_server: S3Server, fake_saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    source = fake_saved_model("a")
    push_version(repo, source, "iris")
    original = (source / "variables" / "variables.index").read_bytes()
    put(s3_server, repo, key(repo, "iris", "1", "variables", "variables.index"), original.upper())

    with pytest.raises(DataLoss, match=r"file 'variables/variables.index' does not match its sha256"):
        fetch_version(repo, repo.list_versions("iris")[1], tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_half_uploaded_version_is_listed_without_manifest(
    repo: S3Repository, s3_server: S3Server, fake_saved_model: SavedModelFactory
) -> None:
    push_version(repo, fake_saved_model("a"), "iris")
    put(s3_server, repo, key(repo, "iris", "2", "saved_model.pb"), b"graph")
    put(s3_server, repo, key(repo, "iris", "2", "variables", "variables.index"), b"index")

    versions = repo.list_versions("iris")
    assert versions[1].has_manifest
    assert not versions[2].has_manifest
    rows = describe_repository(repo, "iris")
    assert [(r.version, r.files, r.complete, r.manifest_ok) for r in rows] == [
        (1, 4, True, True),
        (2, 2, False, None),
    ]
    assert push_version(repo, fake_saved_model("b"), "iris") == 3  # the half-uploaded number stays taken


def test_push_refuses_to_overwrite_a_version(
    repo: S3Repository, s3_server: S3Server, fake_saved_model: SavedModelFactory
) -> None:
    push_version(repo, fake_saved_model("a"), "iris", version=4)
    before = repo.list_versions("iris")[4].fingerprint()
    with pytest.raises(AlreadyExists, match=re.escape("iris version 4 already exists")):
        push_version(repo, fake_saved_model("b"), "iris", version=4)
    # The backend refuses on its own too, even a version that is only half there.
    with pytest.raises(AlreadyExists):
        repo.upload_version("iris", 4, fake_saved_model("c"))
    put(s3_server, repo, key(repo, "iris", "5", "saved_model.pb"), b"partial")
    with pytest.raises(AlreadyExists):
        repo.upload_version("iris", 5, fake_saved_model("d"))
    assert repo.list_versions("iris")[4].fingerprint() == before
    assert push_version(repo, fake_saved_model("e"), "iris") == 6


def test_model_files_read_write(repo: S3Repository) -> None:
    assert repo.read_model_file("iris", "serving.json") is None
    repo.write_model_file("iris", "serving.json", b'{"default": 1}')
    repo.write_model_file("iris", "serving.json", b'{"default": 2}')
    assert repo.read_model_file("iris", "serving.json") == b'{"default": 2}'
    assert repo.list_versions("iris") == {}


def test_a_missing_bucket_is_a_repository_error_naming_it(s3_server: S3Server) -> None:
    repo = S3Repository("no-such-bucket-rtserve", "models", s3_server.settings())
    with pytest.raises(RepositoryError, match=r"s3://no-such-bucket-rtserve/models/ failed: .*NoSuchBucket"):
        repo.list_models()
    with pytest.raises(RepositoryError, match=re.escape("NoSuchBucket")):
        repo.read_model_file("iris", "serving.json")


def test_missing_credentials_are_a_repository_error(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.create_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    repo = S3Repository(bucket, "", s3_server.settings())
    with pytest.raises(RepositoryError, match=rf"s3://{bucket}/ failed: NoCredentialsError"):
        repo.list_models()


def test_a_stopped_server_is_a_repository_error_not_a_hang(
    s3_server: S3Server, fake_saved_model: SavedModelFactory, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket()
    repo = S3Repository(bucket, "models", s3_server.settings())
    push_version(repo, fake_saved_model("a"), "iris")
    listing = repo.list_versions("iris")[1]
    s3_server.stop()

    calls: list[Callable[[], object]] = [
        repo.list_models,
        lambda: repo.list_versions("iris"),
        lambda: repo.read_model_file("iris", "serving.json"),
        lambda: repo.write_model_file("iris", "serving.json", b"{}"),
        lambda: fetch_version(repo, listing, tmp_path / "cache"),
        lambda: push_version(repo, fake_saved_model("b"), "iris", version=9),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(RepositoryError) as caught:
            call()
        assert time.monotonic() - started < OUTAGE_BUDGET_S
        message = caught.value.message
        assert f"s3://{bucket}/" in message
        assert "EndpointConnectionError" in message or "ConnectTimeout" in message
        assert "\n" not in message
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []

    # Once the store is back, the same repository object works again (moto starts empty).
    s3_server.start()
    s3_server.create_bucket(bucket)
    assert repo.list_models() == []


def test_version_folders_with_leading_zeros_are_their_number(
    repo: S3Repository, s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(s3_server, repo, key(repo, "iris", "00000123", "saved_model.pb"), b"graph")
    put(s3_server, repo, key(repo, "iris", "00000123", "variables", "variables.index"), b"index")
    put(s3_server, repo, key(repo, "iris", "0123", "saved_model.pb"), b"other")  # the same number: fewest zeros
    versions = repo.list_versions("iris")
    assert list(versions) == [123]
    assert versions[123].folder_name == "0123"
    assert "folders '0123' and '00000123' are both version 123; serving '0123'" in caplog.text
    fetched = fetch_version(repo, versions[123], tmp_path / "cache")
    assert read_tree(fetched) == {"saved_model.pb": b"other"}


def test_model_files_are_read_up_to_a_limit(repo: S3Repository) -> None:
    repo.write_model_file("iris", "serving.json", b"x" * 1000)
    assert repo.read_model_file("iris", "serving.json", max_bytes=10) == b"x" * 11
    assert repo.read_model_file("iris", "serving.json") == b"x" * 1000
