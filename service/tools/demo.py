"""The demo model ``iris``: a softmax classifier trained on Fisher's 150 Iris measurements.

The measurements ship with the package (``service/tools/data/iris.csv``), so the model is trained on the spot and no
model binary is ever committed.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.repository.base import MANIFEST_NAME
from service.repository.manifest import build_manifest, dump_manifest
from service.runtime.tensorflow import set_signature_methods
from service.tensors import CLASSIFY_METHOD, DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "iris"
DEMO_VERSION = 1
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
CLASSIFY_SIGNATURE = "classify"

# Full-batch gradient descent on standardized features from zero weights: deterministic, well under a second.
_TRAINING_STEPS = 500
_LEARNING_RATE = 0.5


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """The shipped measurements as (features float32 [150, 4], species index int32 [150])."""
    text = resources.files("service.tools").joinpath("data/iris.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    features = np.array([[float(row[name]) for name in FEATURES] for row in rows], dtype=np.float32)
    labels = np.array([SPECIES.index(row["species"]) for row in rows], dtype=np.int32)
    return features, labels


def train_softmax(standardized: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression weights (kernel [features, classes], bias [classes])."""
    x = tf.constant(standardized, tf.float32)
    y = tf.one_hot(labels, len(SPECIES))
    kernel = tf.Variable(tf.zeros([standardized.shape[1], len(SPECIES)]))
    bias = tf.Variable(tf.zeros([len(SPECIES)]))

    def step() -> None:
        with tf.GradientTape() as tape:
            logits = tf.matmul(x, kernel) + bias
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, logits))
        for variable, gradient in zip((kernel, bias), tape.gradient(loss, [kernel, bias]), strict=True):
            variable.assign_sub(_LEARNING_RATE * gradient)

    compiled_step = tf.function(step)  # one graph for all steps: well under a second on CPU
    for _ in range(_TRAINING_STEPS):
        compiled_step()
    return np.asarray(kernel.numpy()), np.asarray(bias.numpy())


class _IrisModule(tf.Module):  # type: ignore[misc]  # tf.Module is untyped
    """Standardize -> softmax; the two exported functions share it."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> None:
        super().__init__(name="iris")
        self.mean = tf.constant(mean, tf.float32)
        self.std = tf.constant(std, tf.float32)
        self.kernel = tf.Variable(kernel, name="kernel", trainable=False)
        self.bias = tf.Variable(bias, name="bias", trainable=False)
        self.species = tf.constant(SPECIES)

    def probabilities(self, features: Any) -> Any:
        return tf.nn.softmax(tf.matmul((features - self.mean) / self.std, self.kernel) + self.bias)

    def predict(self, features: Any) -> dict[str, Any]:
        return {"probabilities": self.probabilities(features)}

    def classify(self, inputs: Any) -> dict[str, Any]:
        parsed = tf.io.parse_example(inputs, {name: tf.io.FixedLenFeature([], tf.float32) for name in FEATURES})
        scores = self.probabilities(tf.stack([parsed[name] for name in FEATURES], axis=1))
        classes = tf.tile(self.species[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}


def build_iris_module() -> _IrisModule:
    """Train on the shipped data and log the training accuracy."""
    features, labels = load_iris()
    mean, std = features.mean(axis=0), features.std(axis=0)
    kernel, bias = train_softmax((features - mean) / std, labels)
    module = _IrisModule(mean, std, kernel, bias)
    predicted = np.argmax(module.probabilities(tf.constant(features)).numpy(), axis=1)
    log.info("iris demo model: training accuracy %.3f", float(np.mean(predicted == labels)))
    return module


def _signatures(module: _IrisModule) -> dict[str, Any]:
    features = tf.TensorSpec([None, len(FEATURES)], tf.float32, name="features")
    examples = tf.TensorSpec([None], tf.string, name="inputs")
    return {
        DEFAULT_SIGNATURE: tf.function(module.predict, input_signature=[features]),
        CLASSIFY_SIGNATURE: tf.function(module.classify, input_signature=[examples]),
    }


def write_demo_model(destination: Path) -> Path:
    """Train the demo model and write it as version 1 under ``destination`` (the model folder).

    Returns ``destination/1``. The version folder appears whole (written aside, then renamed) and replaces an
    older one.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    version_dir = destination / str(DEMO_VERSION)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=destination))
    try:
        module = build_iris_module()
        tf.saved_model.save(module, str(staging), signatures=_signatures(module))
        set_signature_methods(staging, {CLASSIFY_SIGNATURE: CLASSIFY_METHOD})
        # With its manifest the version is complete at once: a server loads it on its first poll, not after two.
        (staging / MANIFEST_NAME).write_bytes(dump_manifest(build_manifest(staging)))
        if version_dir.exists():
            shutil.rmtree(version_dir)
        staging.rename(version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir
