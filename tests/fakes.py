"""Test doubles for the runtime: used only where the point of a test is the manager's logic, not TensorFlow."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from service.errors import DeadlineExceeded, ModelLoadError
from service.tensors import DEFAULT_SIGNATURE, PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
SIGNATURE = SignatureSpec(
    name=DEFAULT_SIGNATURE,
    method_name=PREDICT_METHOD,
    inputs={"x": TensorSpec("x", FLOAT, (-1, 1), "serving_default_x:0")},
    outputs={"y": TensorSpec("y", FLOAT, (-1, 1), "StatefulPartitionedCall:0")},
)


# A warm-up stuck for longer than any test waits is a bug in the test, not a hang to wait out for ever.
HANG_LIMIT_S = 30.0


class FakeServable:
    """Answers y = x + version; the version comes from the file VERSION in the model folder.

    A folder holding HANG warms up until ``abort`` (like a TensorFlow while_loop that the load deadline cancels);
    one holding STUCK warms up until the loader's ``release`` event, whatever ``abort`` does (a thread that
    cannot be stopped).
    """

    def __init__(self, path: Path, release: threading.Event | None = None) -> None:
        self.offset = float((path / "VERSION").read_text())
        self.closed = False
        self.warmed: tuple[int, ...] = ()
        self.hangs = (path / "HANG").exists()
        self.stuck = (path / "STUCK").exists()
        self.release = release or threading.Event()
        self.aborted = threading.Event()
        self.warming = threading.Event()  # set once warm-up has started

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return {DEFAULT_SIGNATURE: SIGNATURE}

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert not self.closed, "a closed servable was called"
        return {"y": inputs["x"] + self.offset}

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        self.warmed = batch_sizes
        self.warming.set()
        if self.stuck:
            self.release.wait(HANG_LIMIT_S)
        elif self.hangs and self.aborted.wait(HANG_LIMIT_S):
            raise DeadlineExceeded("warm-up cancelled")

    def abortable(self) -> AbstractContextManager[None]:
        return nullcontext()

    def abort(self) -> None:
        self.aborted.set()

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads FakeServables; a folder holding a file named BROKEN fails like a corrupt SavedModel."""

    def __init__(self) -> None:
        self.loaded: list[FakeServable] = []
        self.calls = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets STUCK warm-ups return

    def __call__(self, path: Path) -> FakeServable:
        with self.lock:
            self.calls += 1
        if (path / "BROKEN").exists():
            raise ModelLoadError(f"could not load SavedModel at {path}: corrupt saved_model.pb")
        servable = FakeServable(path, self.release)
        with self.lock:
            self.loaded.append(servable)
        return servable

    def servable(self, offset: float) -> FakeServable:
        """The last servable loaded for version ``offset``."""
        with self.lock:
            return [s for s in self.loaded if s.offset == offset][-1]


def write_fake_version(
    folder: Path, version: int, broken: bool = False, hang: bool = False, stuck: bool = False
) -> Path:
    """A folder shaped like a SavedModel version for the fake loader (see FakeLoader and FakeServable)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"fake graph " + str(version).encode())
    (folder / "VERSION").write_text(str(version))
    (folder / "variables").mkdir(exist_ok=True)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    for marker, wanted in (("BROKEN", broken), ("HANG", hang), ("STUCK", stuck)):
        if wanted:
            (folder / marker).write_text("yes")
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
