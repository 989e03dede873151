"""Test doubles for the runtime: used only where the point of a test is the manager's logic, not TensorFlow."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from service.errors import ModelLoadError
from service.tensors import DEFAULT_SIGNATURE, PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
SIGNATURE = SignatureSpec(
    name=DEFAULT_SIGNATURE,
    method_name=PREDICT_METHOD,
    inputs={"x": TensorSpec("x", FLOAT, (-1, 1), "serving_default_x:0")},
    outputs={"y": TensorSpec("y", FLOAT, (-1, 1), "StatefulPartitionedCall:0")},
)


class FakeServable:
    """Answers y = x + version; the version comes from the file VERSION in the model folder."""

    def __init__(self, path: Path) -> None:
        self.offset = float((path / "VERSION").read_text())
        self.closed = False
        self.warmed: tuple[int, ...] = ()

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return {DEFAULT_SIGNATURE: SIGNATURE}

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert not self.closed, "a closed servable was called"
        return {"y": inputs["x"] + self.offset}

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        self.warmed = batch_sizes

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads FakeServables; a folder holding a file named BROKEN fails like a corrupt SavedModel."""

    def __init__(self) -> None:
        self.loaded: list[FakeServable] = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> FakeServable:
        with self.lock:
            self.calls += 1
        if (path / "BROKEN").exists():
            raise ModelLoadError(f"could not load SavedModel at {path}: corrupt saved_model.pb")
        servable = FakeServable(path)
        self.loaded.append(servable)
        return servable


def write_fake_version(folder: Path, version: int, broken: bool = False) -> Path:
    """A folder shaped like a SavedModel version for the fake loader."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"fake graph " + str(version).encode())
    (folder / "VERSION").write_text(str(version))
    (folder / "variables").mkdir(exist_ok=True)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    if broken:
        (folder / "BROKEN").write_text("yes")
    return folder


def write_fake_saved_model(folder: Path, seed: str) -> Path:
    """A folder shaped like a SavedModel (the repository never parses it): a graph file, variables, assets."""
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph:" + seed.encode() * 100)
    (folder / "variables" / "variables.index").write_bytes(b"index:" + seed.encode())
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(3000))
    (folder / "assets" / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    return folder
