"""The seed design: a Flask app calling Keras ``model.predict`` once per request, on Flask's own ``app.run``.

Runs in ``bench/.venvs/kserve`` (Flask and Keras come with TensorFlow there). The one change to the pattern:
it passed ``data["instances"]`` (a Python list) to ``model.predict``, which Keras 3 rejects; it is converted to a
numpy array. Nothing else changes: Werkzeug's request log and Keras' per-call progress bar stay on (the bench
sends both to a log file), ``app.run`` is threaded (its default).

The Keras model is the demo SavedModel's computation rebuilt as Keras layers: ``Normalization`` with the
SavedModel's mean and variance (std squared), then ``Dense(3, softmax)`` with its kernel and bias. The weights are
read from the SavedModel itself, and the startup checks that both give the same probabilities on 256 rows.

usage: python seed_flask.py --port P --model_dir DIR/iris/1
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request

SIGNATURE = "serving_default"
TOLERANCE = 1e-5


def keras_model_from_saved_model(model_dir: str) -> keras.Model:
    """The demo's standardize -> softmax regression as a Keras model with the SavedModel's weights."""
    loaded = tf.saved_model.load(model_dir)
    signature = loaded.signatures[SIGNATURE]
    # The signature captures mean and std (constants, in the order it uses them) and the kernel and bias variables.
    constants = [t.numpy() for t in signature.captured_inputs if t.dtype == tf.float32]
    mean, std = constants
    kernel, bias = loaded.kernel.numpy(), loaded.bias.numpy()

    inputs = keras.Input(shape=(kernel.shape[0],), name="features")
    standardized = keras.layers.Normalization(mean=mean, variance=np.square(std))(inputs)
    dense = keras.layers.Dense(kernel.shape[1], activation="softmax")
    model = keras.Model(inputs, dense(standardized))
    dense.set_weights([kernel, bias])

    rows = np.random.default_rng(0).normal(mean, std, size=(256, kernel.shape[0])).astype(np.float32)
    expected = signature(features=tf.constant(rows))["probabilities"].numpy()
    difference = float(np.max(np.abs(model.predict(rows, verbose=0) - expected)))
    if difference > TOLERANCE:
        raise SystemExit(f"the Keras model differs from the SavedModel by {difference}")
    print(f"keras model matches the SavedModel signature: max abs difference {difference:.2e}", file=sys.stderr)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_dir", required=True)
    args = parser.parse_args()

    model = keras_model_from_saved_model(args.model_dir)
    app = Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def predict() -> Any:
        data = request.get_json()
        prediction = model.predict(np.array(data["instances"]))  # the pattern passed the list itself
        return jsonify({"predictions": prediction.tolist()})

    app.run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
