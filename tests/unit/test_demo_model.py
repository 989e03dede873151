"""The demo model `iris`, trained from the shipped CSV and served through the TensorFlow runtime."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelfactory import example
from service.repository.manifest import read_manifest, verify_folder
from service.runtime.runner import RunnerChoice
from service.runtime.tensorflow import TensorFlowLoader, TensorFlowServable
from service.tensors import CLASSIFY_METHOD, PREDICT_METHOD
from service.tools.demo import FEATURES, SPECIES, load_iris, write_demo_model

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@pytest.fixture(scope="module")
def iris(demo_model_dir: Path, runner: RunnerChoice) -> Iterator[TensorFlowServable]:
    servable = TensorFlowLoader(runner=runner)(demo_model_dir)
    yield servable
    servable.close()


def predict(iris: TensorFlowServable, rows: list[list[float]]) -> np.ndarray:
    return iris.run("serving_default", {"features": np.array(rows, dtype=np.float32)})["probabilities"]


def test_shipped_data_is_the_iris_data_set() -> None:
    features, labels = load_iris()
    assert features.shape == (150, 4)
    assert features.dtype == np.float32
    assert Counter(labels.tolist()) == {0: 50, 1: 50, 2: 50}
    assert features[0].tolist() == pytest.approx(SETOSA)


def test_demo_model_is_version_1_of_its_folder(demo_model_dir: Path) -> None:
    assert demo_model_dir.name == "1"
    assert [p.name for p in demo_model_dir.parent.iterdir()] == ["1"]  # no staging folder left behind
    assert (demo_model_dir / "saved_model.pb").is_file()
    assert (demo_model_dir / "variables").is_dir()
    manifest = read_manifest(demo_model_dir)  # complete at once: a server need not wait for a stable listing
    verify_folder(demo_model_dir, manifest)
    assert {entry.path for entry in manifest.files} >= {"saved_model.pb", "variables/variables.index"}


def test_signatures(iris: TensorFlowServable) -> None:
    assert set(iris.signatures) == {"serving_default", "classify"}
    default, classify = iris.signatures["serving_default"], iris.signatures["classify"]
    assert default.method_name == PREDICT_METHOD
    assert [(s.name, s.dtype.tf_name, s.shape) for s in default.inputs.values()] == [("features", "DT_FLOAT", (-1, 4))]
    assert [(s.name, s.dtype.tf_name, s.shape) for s in default.outputs.values()] == [
        ("probabilities", "DT_FLOAT", (-1, 3))
    ]
    assert classify.method_name == CLASSIFY_METHOD
    assert [(s.name, s.dtype.tf_name, s.shape) for s in classify.inputs.values()] == [("inputs", "DT_STRING", (-1,))]
    assert [(s.name, s.dtype.tf_name, s.shape) for s in classify.outputs.values()] == [
        ("classes", "DT_STRING", (-1, 3)),
        ("scores", "DT_FLOAT", (-1, 3)),
    ]


def test_predicts_setosa_and_virginica(iris: TensorFlowServable) -> None:
    probabilities = predict(iris, [SETOSA, VIRGINICA])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-5)
    assert [SPECIES[i] for i in probabilities.argmax(axis=1)] == ["setosa", "virginica"]
    assert probabilities[0, 0] > 0.9
    assert probabilities[1, 2] > 0.9


def test_training_accuracy_is_at_least_90_percent(iris: TensorFlowServable) -> None:
    features, labels = load_iris()
    predicted = predict(iris, features.tolist()).argmax(axis=1)
    assert np.mean(predicted == labels) >= 0.9


def test_classify_takes_serialized_examples(iris: TensorFlowServable) -> None:
    rows = [SETOSA, VIRGINICA]
    inputs = np.empty(2, dtype=object)
    inputs[:] = [example(**dict(zip(FEATURES, row, strict=True))) for row in rows]
    result = iris.run("classify", {"inputs": inputs})
    species = [name.encode() for name in SPECIES]
    assert result["classes"].tolist() == [species, species]
    np.testing.assert_allclose(result["scores"], predict(iris, rows), rtol=1e-6)


def test_rewriting_replaces_the_version(tmp_path: Path, runner: RunnerChoice) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "stale.txt").write_text("old")
    written = write_demo_model(tmp_path)
    assert written == tmp_path / "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    assert not (written / "stale.txt").exists()
    assert TensorFlowLoader(runner=runner)(written).signatures.keys() == {"serving_default", "classify"}
