"""MANIFEST.json: building, parsing (including hostile input) and verifying a folder against it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from service.errors import DataLoss, InvalidArgument
from service.repository.base import MANIFEST_NAME
from service.repository.manifest import (
    Manifest,
    ManifestEntry,
    build_manifest,
    dump_manifest,
    is_safe_relative_path,
    parse_manifest,
    plan_upload,
    verify_folder,
)

GOOD_SHA = "0" * 64


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "version"
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph bytes")
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 10)
    (root / "zz.txt").write_bytes(b"")
    return root


def test_build_lists_every_file_sorted_with_size_and_sha256(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_bytes(b"an old manifest is never listed")
    manifest = build_manifest(folder)
    assert [e.path for e in manifest.files] == [
        "saved_model.pb",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
        "zz.txt",
    ]
    data = (folder / "variables" / "variables.data-00000-of-00001").read_bytes()
    entry = manifest.files[1]
    assert entry.size == 2560
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.total_bytes == sum((folder / e.path).stat().st_size for e in manifest.files)


def test_dump_then_parse_round_trips(folder: Path) -> None:
    manifest = build_manifest(folder)
    data = dump_manifest(manifest)
    assert json.loads(data)["format"] == 1
    assert parse_manifest(data) == manifest


def test_parse_sorts_entries_by_path() -> None:
    document = {
        "format": 1,
        "files": [{"path": "b", "size": 1, "sha256": GOOD_SHA}, {"path": "a", "size": 2, "sha256": GOOD_SHA}],
    }
    manifest = parse_manifest(json.dumps(document).encode())
    assert [e.path for e in manifest.files] == ["a", "b"]


def _document(**entry: object) -> bytes:
    base: dict[str, object] = {"path": "saved_model.pb", "size": 3, "sha256": GOOD_SHA}
    base.update(entry)
    return json.dumps({"format": 1, "files": [base]}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"format": 2, "files": []}', "format 2"),
        (b'{"files": []}', "format None"),
        (b'{"format": 1, "files": {}}', "'files' must be a list"),
        (b'{"format": 1, "files": ["x"]}', "files[0] must be an object"),
        (_document(path="/etc/passwd"), "unsafe or invalid path '/etc/passwd'"),
        (_document(path="../outside"), "unsafe or invalid path '../outside'"),
        (_document(path="variables/../../x"), "unsafe or invalid path"),
        (_document(path="a//b"), "unsafe or invalid path"),
        (_document(path=""), "unsafe or invalid path"),
        (_document(path=7), "unsafe or invalid path 7"),
        (_document(path=MANIFEST_NAME), "unsafe or invalid path"),
        (_document(size=-1), "(saved_model.pb) has an invalid size -1"),
        (_document(size="3"), "invalid size '3'"),
        (_document(size=True), "invalid size True"),
        (_document(sha256="abc"), "invalid sha256 'abc'"),
        (_document(sha256="G" * 64), "invalid sha256"),
        (_document(sha256="0" * 64 + "\n"), "invalid sha256"),
        (_document(size=1.5), "(saved_model.pb) has an invalid size 1.5"),
        (_document(size=None), "invalid size None"),
        (_document(path=None), "unsafe or invalid path None"),
        (b'{"format": 1, "files": [{"path": "a", "size": NaN, "sha256": "%s"}]}' % GOOD_SHA.encode(), "size nan"),
        (b'{"format": 1, "files": [{"path": "a", "size": 1}]}', "files[0] (a) has an invalid sha256 None"),
        (b'{"format": 1}', "'files' must be a list"),
        (b'{"format": "1", "files": []}', "format '1', expected 1"),
        (b'{"format": 1, "files": [[]]}', "files[0] must be an object"),
        (b'"text"', "must be a JSON object"),
    ],
)
def test_parse_rejects_malformed_or_unsafe_manifests(data: bytes, message: str) -> None:
    with pytest.raises(DataLoss) as caught:
        parse_manifest(data)
    assert message in caught.value.message


def test_the_first_bad_entry_is_the_one_named() -> None:
    files = [{"path": "a", "size": 1, "sha256": GOOD_SHA}, {"path": "b", "size": -2}, {"path": "../c"}]
    with pytest.raises(DataLoss) as caught:
        parse_manifest(json.dumps({"format": 1, "files": files}).encode())
    assert caught.value.message == "MANIFEST.json files[1] (b) has an invalid size -2"


def test_fields_it_does_not_know_are_ignored() -> None:
    entry = {"path": "a", "size": 1, "sha256": GOOD_SHA, "mode": 420}
    manifest = parse_manifest(json.dumps({"format": 1, "files": [entry], "written_by": "rtserve 9"}).encode())
    assert manifest == Manifest((ManifestEntry("a", 1, GOOD_SHA),))


def test_parse_rejects_duplicate_paths() -> None:
    entry = {"path": "a", "size": 1, "sha256": GOOD_SHA}
    with pytest.raises(DataLoss, match=re.escape("lists 'a' more than once")):
        parse_manifest(json.dumps({"format": 1, "files": [entry, entry]}).encode())


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("saved_model.pb", True),
        ("variables/variables.index", True),
        ("a..b", True),
        ("..", False),
        ("a/../b", False),
        ("/abs", False),
        ("./x", False),
        ("x/", False),
        ("a\\..\\b", False),
        ("", False),
    ],
)
def test_safe_relative_paths(path: str, safe: bool) -> None:
    assert is_safe_relative_path(path) is safe


def test_verify_accepts_the_folder_it_was_built_from(folder: Path) -> None:
    manifest = build_manifest(folder)
    (folder / MANIFEST_NAME).write_bytes(dump_manifest(manifest))
    verify_folder(folder, manifest)


def test_verify_names_a_missing_file(folder: Path) -> None:
    manifest = build_manifest(folder)
    (folder / "variables" / "variables.index").unlink()
    with pytest.raises(DataLoss, match=re.escape("'variables/variables.index' listed in MANIFEST.json is missing")):
        verify_folder(folder, manifest)


def test_verify_names_a_file_with_another_size(folder: Path) -> None:
    manifest = build_manifest(folder)
    (folder / "saved_model.pb").write_bytes(b"graph bytes plus more")
    with pytest.raises(DataLoss, match=re.escape("'saved_model.pb' has 21 bytes, MANIFEST.json says 11")):
        verify_folder(folder, manifest)


def test_verify_names_a_file_with_the_same_size_but_other_bytes(folder: Path) -> None:
    manifest = build_manifest(folder)
    (folder / "variables" / "variables.index").write_bytes(b"INDEX")
    with pytest.raises(DataLoss, match=re.escape("'variables/variables.index' does not match its sha256")):
        verify_folder(folder, manifest)


def test_verify_rejects_an_unexpected_extra_file(folder: Path) -> None:
    manifest = build_manifest(folder)
    (folder / "variables" / "variables.data-00001-of-00002").write_bytes(b"stray shard")
    with pytest.raises(DataLoss, match=re.escape("'variables/variables.data-00001-of-00002' is not listed")):
        verify_folder(folder, manifest)


def test_verify_of_an_empty_manifest_rejects_any_file(folder: Path) -> None:
    with pytest.raises(DataLoss, match=re.escape("not listed")):
        verify_folder(folder, Manifest(()))


def test_plan_upload_ignores_an_existing_manifest_and_describes_the_rest(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_bytes(b"stale")
    plan = plan_upload(folder)
    assert [rel for rel, _path in plan.files] == [e.path for e in build_manifest(folder).files]
    assert MANIFEST_NAME not in {rel for rel, _path in plan.files}
    assert parse_manifest(plan.manifest_bytes) == plan.manifest
    assert plan.manifest.files[0] == ManifestEntry("saved_model.pb", 11, hashlib.sha256(b"graph bytes").hexdigest())


def test_plan_upload_refuses_a_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=re.escape("is not a folder")):
        plan_upload(tmp_path / "absent")
    with pytest.raises(InvalidArgument, match=re.escape("holds no files")):
        plan_upload(tmp_path)
