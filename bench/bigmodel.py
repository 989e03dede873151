"""A SavedModel with the demo model's signature and large weights, for the memory measurement.

The demo model's weights are a few hundred bytes, so a version swap of it cannot show whether two versions are
ever held at once or whether the old one's memory is given back. This model carries one float32 variable of the
asked size, all of it read from the checkpoint at load (so it is resident), while a call only gathers three of
its columns: the swap is measured, not the model's arithmetic.

usage: python -m bench.bigmodel DESTINATION --mib 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.payloads import INPUT_NAME, OUTPUT_NAME

FEATURES = 4


def write(destination: Path, mib: int) -> Path:
    columns = mib * 1024 * 1024 // (4 * FEATURES)
    module = tf.Module()
    # Random, not zeros: a checkpoint of constants could be stored and loaded lazily or compressed.
    values = np.random.default_rng(0).standard_normal((FEATURES, columns), dtype=np.float32)
    module.weights = tf.Variable(values, name="weights")

    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        picked = tf.gather(module.weights, [0, 1, 2], axis=1)
        return {OUTPUT_NAME: tf.nn.softmax(tf.matmul(features, picked))}

    module.serve = tf.function(serve, input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name=INPUT_NAME)])
    tf.saved_model.save(module, str(destination), signatures={"serving_default": module.serve})
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    print(write(args.destination, args.mib))


if __name__ == "__main__":
    main()
