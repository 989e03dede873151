"""The compute-bound bench case: a small convolutional network over 64x64 RGB images, as a TF2 SavedModel.

Signature ``serving_default``: ``images`` float32 [-1, 64, 64, 3] -> ``probabilities`` float32 [-1, 10] (softmax).
A 4x4 stride-4 convolution to 32 channels (patches), a 3x3 stride-2 one to 64, a 3x3 one to 64 and a 2x2 max
pool (ReLU after each convolution), then a dense layer of 512 (2 MiB of weights) and the 10-way softmax. The
weights come from a seeded generator (He-scaled normals), so every run builds the same model; the images are
seeded too (``images``), so every run sends the same bytes. The size is picked so one image costs 1-2 ms on one
TensorFlow thread and a batch of 64 several times less per image: at batch 1 the dense layer reads all its
weights for one image and every op pays its fixed cost for one image (docs/benchmarks.md).

usage: python -m bench.cnnmodel DESTINATION [--seed 13]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NAME = "cnn"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
SIDE, CHANNELS, CLASSES = 64, 3, 10
# (filters, kernel size, stride) per convolution; a 2x2 max pool follows the last one.
CONVOLUTIONS = ((32, 4, 4), (64, 3, 2), (64, 3, 1))
DENSE = 512
SEED = 13
IMAGE_SEED = 20261201


def images(count: int) -> np.ndarray:
    """``count`` fixed images, float32 [count, 64, 64, 3] in [0, 1]; the first ones are the same for every count."""
    generator = np.random.default_rng(IMAGE_SEED)
    pixels = generator.random((max(count, 8), SIDE, SIDE, CHANNELS), dtype=np.float32)
    return pixels[:count]


def describe() -> str:
    """One line for the report: the signature and the layers."""
    layers = ", ".join(f"conv {size}x{size}/{stride} -> {filters}" for filters, size, stride in CONVOLUTIONS)
    return (
        f"`{INPUT_NAME}` float32 [-1, {SIDE}, {SIDE}, {CHANNELS}] -> {layers}, max pool 2x2, dense {DENSE}, "
        f"softmax -> `{OUTPUT_NAME}` float32 [-1, {CLASSES}] (seeded weights, seed {SEED})"
    )


def weights(seed: int = SEED) -> list[np.ndarray]:
    """The kernels and biases in layer order: (kernel, bias) per convolution, then the two dense layers."""
    generator = np.random.default_rng(seed)
    shapes: list[tuple[int, ...]] = []
    channels = CHANNELS
    side = SIDE
    for filters, size, stride in CONVOLUTIONS:
        shapes += [(size, size, channels, filters), (filters,)]
        channels, side = filters, side // stride
    side //= 2
    shapes += [(side * side * channels, DENSE), (DENSE,), (DENSE, CLASSES), (CLASSES,)]
    out = []
    for shape in shapes:
        if len(shape) == 1:
            out.append(np.full(shape, 0.01, dtype=np.float32))
        else:
            fan_in = int(np.prod(shape[:-1]))
            out.append((generator.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
    return out


def write(destination: Path, seed: int = SEED) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.params = [tf.Variable(value) for value in weights(seed)]

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = images
        params = module.params
        for layer, (_, _, stride) in enumerate(CONVOLUTIONS):
            kernel, bias = params[2 * layer], params[2 * layer + 1]
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=stride, padding="SAME") + bias)
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        dense, dense_bias, last, last_bias = params[2 * len(CONVOLUTIONS) :]
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        x = tf.nn.relu(tf.matmul(x, dense) + dense_bias)
        return {OUTPUT_NAME: tf.nn.softmax(tf.matmul(x, last) + last_bias)}

    spec = tf.TensorSpec([None, SIDE, SIDE, CHANNELS], tf.float32, name=INPUT_NAME)
    module.serve = tf.function(serve, input_signature=[spec])
    tf.saved_model.save(module, str(destination), signatures={"serving_default": module.serve})
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(write(args.destination, args.seed))


if __name__ == "__main__":
    main()
