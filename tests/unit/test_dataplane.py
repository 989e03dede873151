"""The data plane's answers: one code per condition, and no cache path in what a client reads.

On a real local repository with the fake runtime (tests/fakes.py): no TensorFlow needed for these rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from fakes import SIGNATURE, FakeLoader, write_fake_version
from service.api.errors import http_status
from service.codecs.lookup import UnknownSignature
from service.dataplane import CachePaths, DataPlane, Target
from service.errors import Code, Unavailable
from service.manager import ModelManager
from service.observability.metrics import Metrics
from service.repository.local import LocalRepository
from service.settings import Settings


@pytest.fixture
def dataplane(tmp_path: Path) -> DataPlane:
    root = tmp_path / "repo"
    source = write_fake_version(tmp_path / "src", 1)
    LocalRepository(root).upload_version("m", 1, source)
    settings = Settings(repository=str(root), cache_dir=str(tmp_path / "cache"))
    manager = ModelManager(
        settings,
        LocalRepository(root),
        FakeLoader(),
        Metrics(CollectorRegistry()),
        after_load_change=lambda _: None,
    )
    manager.poll_once()
    return DataPlane(manager, 1000)


def test_a_version_being_unloaded_is_unavailable_like_in_the_batcher(dataplane: DataPlane) -> None:
    # The snapshot still lists the version while its unload refuses new leases: the window a lease can lose.
    dataplane.resolve(Target("m", version=1)).retire(0.0)
    with pytest.raises(Unavailable, match="being unloaded; retry") as caught, dataplane.lease(Target("m", version=1)):
        pass
    assert http_status(caught.value.code) == 503  # the batcher's own "being unloaded" is 503 too


def test_a_signature_the_version_lacks_is_failed_precondition_also_at_run(dataplane: DataPlane) -> None:
    # find_signature (the decoders' check) says FAILED_PRECONDITION (TF Serving's code; HTTP 400), and so does the
    # runtime, which uses it too.
    with dataplane.lease(Target("m")) as loaded:
        spec = dataplane.signature(loaded, None)
        ghost = replace(spec, name="ghost")
        inputs = {name: np.zeros((1, 1), np.float32) for name in spec.inputs}
        with pytest.raises(UnknownSignature, match="'ghost' not found") as caught:
            asyncio.run(dataplane.run(loaded, ghost, inputs))
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.key == "ghost"
    assert http_status(caught.value.code) == 400
    assert SIGNATURE.name in caught.value.message  # the message lists what the version has


def test_cache_paths_become_the_model_and_version(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = CachePaths(cache)
    folder = cache / "iris" / "12-0123456789ab"
    assert paths.scrub(f"cannot load SavedModel from {folder}: bad graph") == (
        "cannot load SavedModel from model 'iris' version 12: bad graph"
    )
    assert paths.scrub(f"model version {folder} has been unloaded") == "model 'iris' version 12 has been unloaded"
    assert paths.scrub(f"{folder}/assets.extra/x: broken") == "model 'iris' version 12 file 'assets.extra/x': broken"
    assert paths.scrub(f"cannot open {cache}/.tmp-iris-3-xyz/saved_model.pb") == "cannot open the model cache"
    assert paths.scrub("nothing to hide in /tmp/elsewhere") == "nothing to hide in /tmp/elsewhere"


def test_a_relative_cache_dir_is_found_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = CachePaths(Path(".rtserve-cache"))
    relative = ".rtserve-cache/m/1-aaaaaaaaaaaa"
    assert paths.scrub(f"from {relative}") == "from model 'm' version 1"
    assert paths.scrub(f"from {tmp_path / relative}") == "from model 'm' version 1"


def test_a_run_error_naming_the_cache_folder_names_the_model_and_version(
    dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real runtime says this for a servable closed under a batch (runtime/tensorflow.py, _no_runner).
    with dataplane.lease(Target("m")) as loaded:

        def closed(signature: str, inputs: object) -> object:
            raise Unavailable(f"model version {loaded.path} has been unloaded")

        monkeypatch.setattr(loaded.servable, "run", closed)
        spec = dataplane.signature(loaded, None)
        with pytest.raises(Unavailable) as caught:
            asyncio.run(dataplane.run(loaded, spec, {name: np.zeros((1, 1), np.float32) for name in spec.inputs}))
    assert caught.value.message == "model 'm' version 1 has been unloaded"
    assert str(caught.value) == caught.value.message
