"""Builders that write real SavedModels into a given version folder, for tests.

Each builder takes the version folder to create (``<root>/<model>/<version>``) and returns it. Weights are
fixed so tests can compute the expected outputs by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.runtime.tensorflow import set_signature_methods
from service.tensors import CLASSIFY_METHOD, REGRESS_METHOD

# keras_classifier: probabilities = softmax(features @ KERAS_KERNEL + KERAS_BIAS)
KERAS_KERNEL = np.array([[0.5, -0.25, 0.1], [-0.3, 0.2, 0.4], [0.05, 0.6, -0.5], [0.7, -0.1, 0.2]], dtype=np.float32)
KERAS_BIAS = np.array([0.1, -0.2, 0.05], dtype=np.float32)

# regress_classify_module: regress outputs = x * REGRESS_WEIGHT + REGRESS_BIAS;
# classify scores = [sigmoid(-x), sigmoid(x)] for CLASSIFY_CLASSES.
REGRESS_WEIGHT = 2.0
REGRESS_BIAS = 1.0
CLASSIFY_CLASSES = (b"negative", b"positive")
EXAMPLE_FEATURE = "x"

GARBAGE = b"this is not a SavedModel protobuf\n"


def keras_classifier(path: Path) -> Path:
    """A Keras 3 functional model (Input "features" [4] -> Dense softmax 3) exported as a TF SavedModel.

    Keras names the output ``output_0`` and also writes a second signature, ``serve``.
    """
    import keras

    features = keras.Input(shape=(4,), name="features")
    dense = keras.layers.Dense(3, activation="softmax", name="probabilities")
    model = keras.Model(features, dense(features))
    dense.set_weights([KERAS_KERNEL, KERAS_BIAS])
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


class _MultiSignature(tf.Module):  # type: ignore[misc]
    def serve(self, ids: Any, tokens: Any) -> dict[str, Any]:
        return {
            "total": tf.reduce_sum(ids, axis=1),
            "lengths": tf.strings.length(tokens),
            "upper": tf.strings.upper(tokens),
        }

    def scale(self, x: Any, flag: Any) -> dict[str, Any]:
        doubles = tf.cast(x, tf.float64)
        return {"y": tf.where(flag[:, tf.newaxis], doubles * 2.0, doubles)}


def multi_signature_module(path: Path) -> Path:
    """A plain tf.Module with int64/string/bool/float64 tensors and unknown dimensions.

    ``serving_default``: ids int64 [-1, -1], tokens string [-1] -> total int64 [-1] (row sums of ids),
    lengths int32 [-1] (byte lengths of tokens), upper string [-1] (tokens upper-cased).
    ``scale``: x float32 [-1, 2], flag bool [-1] -> y float64 [-1, 2] (x * 2 where flag, else x).
    """
    module = _MultiSignature()
    serve = tf.function(
        module.serve,
        input_signature=[
            tf.TensorSpec([None, None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="tokens"),
        ],
    )
    scale = tf.function(
        module.scale,
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="x"),
            tf.TensorSpec([None], tf.bool, name="flag"),
        ],
    )
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve, "scale": scale})
    return path


def regress_classify_module(path: Path) -> Path:
    """A TF1-style SavedModel (SavedModelBuilder) with a classify and a regress signature on tf.Examples.

    Both take "inputs" DT_STRING [-1] (serialized tf.Example with a float feature "x").
    ``classify`` -> classes string [-1, 2] (CLASSIFY_CLASSES), scores float [-1, 2]: sigmoid(-x), sigmoid(x).
    ``regress`` -> outputs float [-1] (x * REGRESS_WEIGHT + REGRESS_BIAS, the weight a variable).
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.io.parse_example(serialized, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([], tf.float32)})[EXAMPLE_FEATURE]
        weight = v1.Variable(REGRESS_WEIGHT, name="weight")
        outputs = x * weight + REGRESS_BIAS
        scores = tf.stack([tf.sigmoid(-x), tf.sigmoid(x)], axis=1)
        classes = tf.tile(tf.constant([list(CLASSIFY_CLASSES)]), [tf.shape(x)[0], 1])
        signatures = {
            "classify": v1.saved_model.classification_signature_def(serialized, classes, scores),
            "regress": v1.saved_model.regression_signature_def(serialized, outputs),
        }
        _save_tf1(graph, path, signatures)
    # The builder already writes these method names; setting them again checks the utility on a TF1 model.
    set_signature_methods(path, {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD})
    return path


class _Mixed(tf.Module):  # type: ignore[misc]
    def double(self, v: Any) -> dict[str, Any]:
        return {"doubled": v * 2.0}

    def magnitude(self, z: Any) -> dict[str, Any]:
        return {"magnitude": tf.abs(z)}


def unsupported_dtype_module(path: Path) -> Path:
    """``serving_default``: v float32 of unknown rank -> doubled (v * 2).

    ``complex``: z complex64 [-1] -> magnitude, a dtype rtserve does not carry.
    """
    module = _Mixed()
    double = tf.function(module.double, input_signature=[tf.TensorSpec(None, tf.float32, name="v")])
    magnitude = tf.function(module.magnitude, input_signature=[tf.TensorSpec([None], tf.complex64, name="z")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": double, "complex": magnitude})
    return path


def corrupt_model(path: Path) -> Path:
    """A version folder whose saved_model.pb is garbage bytes."""
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(GARBAGE)
    return path


def example(**features: float) -> bytes:
    """A serialized tf.Example with one float per feature."""
    feature = {name: tf.train.Feature(float_list=tf.train.FloatList(value=[value])) for name, value in features.items()}
    return bytes(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


# -- hostile models: graphs that reach outside the model (runtime/screening.py refuses them) -------------------


class _FloatModule(tf.Module):  # type: ignore[misc]
    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def serve(self, x: Any) -> dict[str, Any]:
        return {"y": self._body(x)}


def float_module(path: Path, body: Any) -> Path:
    """``serving_default``: x float32 [-1] -> y = body(x), a tf.Module saved with tf.saved_model.save."""
    module = _FloatModule(body)
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def reads_file_model(path: Path, target: str) -> Path:
    """y = x + the byte length of the file ``target`` (tf.io.read_file: ReadFile)."""
    return float_module(path, lambda x: x + tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32))


def reads_file_in_branch_model(path: Path, target: str) -> Path:
    """ReadFile hidden in a tf.cond branch, a library function of its own (y = x, or x + length when x is empty)."""

    def body(x: Any) -> Any:
        length = tf.cond(
            tf.size(x) > 0,
            lambda: tf.constant(0.0),
            lambda: tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32),
        )
        return x + length

    return float_module(path, body)


def writes_file_model(path: Path, target: str) -> Path:
    """y = x, and x written as text to the file ``target`` on every call (tf.io.write_file: WriteFile)."""

    def body(x: Any) -> Any:
        written = tf.io.write_file(target, tf.strings.reduce_join(tf.strings.as_string(x), separator=","))
        with tf.control_dependencies([written]):
            return tf.identity(x)

    return float_module(path, body)


def prints_model(path: Path, output_stream: object) -> Path:
    """y = x, and x printed to ``output_stream`` (tf.print: PrintV2): sys.stderr, or a "file:///..." URL."""

    def body(x: Any) -> Any:
        printed = tf.print("x:", x, output_stream=output_stream)
        with tf.control_dependencies([printed]):
            return tf.identity(x)

    return float_module(path, body)


def saves_checkpoint_model(path: Path, prefix: str) -> Path:
    """y = x, and x saved as a checkpoint under ``prefix`` by the signature itself (SaveV2 outside the saver)."""

    def body(x: Any) -> Any:
        saved = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["x"], shape_and_slices=[""], tensors=[x])
        with tf.control_dependencies([saved]):
            return tf.identity(x)

    return float_module(path, body)


def tf1_float_model(path: Path, body: Any) -> Path:
    """A TF1-style SavedModel (graph nodes, no functions): ``serving_default`` x float32 [-1] -> y = body(x)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        signature = v1.saved_model.predict_signature_def({"x": x}, {"y": body(x)})
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    return path


def tf1_reads_file_model(path: Path, target: str) -> Path:
    """A TF1-style SavedModel: y = x + the byte length of ``target``."""
    return tf1_float_model(path, lambda x: x + tf.cast(tf.strings.length(tf.io.read_file(target)), tf.float32))


def _count_while_zero(x: Any, while_loop: Any) -> Any:
    """x + n, where a data-dependent while_loop counts n up while sum(x) == 0 (for ever on zeros)."""
    total = tf.reduce_sum(x)
    count = while_loop(lambda n: tf.equal(total, 0.0), lambda n: n + 1.0, [tf.constant(0.0)])
    return x + tf.nest.flatten(count)[0]


def loops_on_zeros_model(path: Path) -> Path:
    """y = x + n, where a data-dependent tf.while_loop counts n up while sum(x) == 0.

    Any real input with a non-zero sum answers at once (n = 0); the synthetic zeros of warm-up loop for ever.
    """
    return float_module(path, lambda x: _count_while_zero(x, tf.while_loop))


def tf1_loops_on_zeros_model(path: Path) -> Path:
    """The same loop as loops_on_zeros_model in a TF1-style graph (v1 while_loop nodes, no functions)."""
    return tf1_float_model(path, lambda x: _count_while_zero(x, tf.compat.v1.while_loop))


# -- escapes through a serialized graph: a tf.data graph carried as a string and rebuilt by DatasetFromGraph ----


def _dataset_from_graph_module(path: Path, serialized: bytes, element: Any) -> Path:
    """``serving_default``: x float32 [-1] -> y = the first element of a dataset rebuilt from ``serialized``.

    The graph only names DatasetFromGraph and the iteration ops; what the dataset does (read files, write
    files) is inside the string constant. The constant is picked at run time so grappler cannot fold the
    dataset away before it runs.
    """

    def body(x: Any) -> Any:
        graph_def = tf.where(tf.size(x) >= 0, tf.constant(serialized), tf.constant(b""))
        variant = tf.raw_ops.DatasetFromGraph(graph_def=graph_def)
        first = tf.data.experimental.from_variant(variant, element).take(1).get_single_element()
        return tf.fill(tf.shape(x), first)

    module = _FloatModule(body)
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def dataset_reads_file_model(path: Path, secret: str) -> Path:
    """y (string [-1]) = the first line of the file ``secret``, read by a TextLineDataset inside a serialized
    tf.data graph that the signature runs with DatasetFromGraph."""
    serialized = tf.data.TextLineDataset(secret)._as_serialized_graph().numpy()
    return _dataset_from_graph_module(path, bytes(serialized), tf.TensorSpec([], tf.string))


def dataset_saves_model(path: Path, target: str) -> Path:
    """y (int64 [-1]) = 0, and the folder ``target`` written with a tf.data snapshot (SaveDatasetV2) by a
    serialized tf.data graph that the signature runs with DatasetFromGraph."""
    import shutil

    from tensorflow.python.data.ops.save_op import _SaveDataset  # the dataset behind Dataset.save: SaveDatasetV2

    serialized = _SaveDataset(tf.data.Dataset.range(1), target, None, None)._as_serialized_graph().numpy()
    shutil.rmtree(target)  # building the dataset in Python already writes its spec file; only the model may write
    return _dataset_from_graph_module(path, bytes(serialized), tf.TensorSpec([], tf.int64))


# -- realistic models: what the screen's allowlist must let through ---------------------------------------------


def _keras_export(path: Path, inputs: Any, outputs: Any) -> Path:
    import keras

    keras.Model(inputs, outputs).export(str(path), format="tf_saved_model", verbose=False)
    return path


def keras_dense_model(path: Path) -> Path:
    """Dense, Dropout, BatchNormalization and LayerNormalization over 8 floats."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8,), name="x")
    hidden = layers.Dense(16, activation="relu")(inputs)
    hidden = layers.Dropout(0.2)(layers.BatchNormalization()(hidden))
    hidden = layers.LayerNormalization()(layers.Dense(8, activation="gelu")(hidden))
    return _keras_export(path, inputs, layers.Dense(3, activation="softmax")(hidden))


def keras_conv_model(path: Path) -> Path:
    """Conv2D, DepthwiseConv2D, max, average and global pooling, Conv1D over an 8x8x3 image."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8, 8, 3), name="image")
    hidden = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, padding="same", activation="relu")(inputs))
    hidden = layers.AveragePooling2D(2)(layers.DepthwiseConv2D(3, padding="same")(hidden))
    pooled = layers.GlobalAveragePooling2D()(layers.BatchNormalization()(hidden))
    sequence = layers.GlobalMaxPooling1D()(layers.Conv1D(2, 2)(layers.Reshape((4, 4))(layers.Flatten()(hidden))))
    return _keras_export(path, inputs, layers.Dense(2)(layers.Concatenate()([pooled, sequence])))


def keras_recurrent_model(path: Path) -> Path:
    """Embedding, LSTM, GRU, a bidirectional SimpleRNN over 6 token ids."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(6,), dtype="int64", name="tokens")
    embedded = layers.Embedding(50, 8, mask_zero=True)(inputs)
    hidden = layers.LSTM(8, return_sequences=True)(embedded)
    hidden = layers.Bidirectional(layers.SimpleRNN(4, return_sequences=True))(hidden)
    return _keras_export(path, inputs, layers.Dense(1)(layers.GRU(4)(hidden)))


def keras_attention_model(path: Path) -> Path:
    """MultiHeadAttention with a residual LayerNormalization, the core of a transformer block."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(5, 8), name="sequence")
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)(inputs, inputs)
    hidden = layers.LayerNormalization()(layers.Add()([inputs, attended]))
    return _keras_export(path, inputs, layers.Dense(2)(layers.GlobalAveragePooling1D()(hidden)))


def keras_preprocessing_model(path: Path) -> Path:
    """StringLookup, IntegerLookup (inline vocabularies), Hashing, Normalization, Discretization, CategoryEncoding."""
    import keras
    from keras import layers

    colour = keras.Input(shape=(1,), dtype="string", name="colour")
    size = keras.Input(shape=(1,), dtype="int64", name="size")
    city = keras.Input(shape=(1,), dtype="string", name="city")
    price = keras.Input(shape=(1,), dtype="float32", name="price")
    encoded = [
        layers.StringLookup(vocabulary=["red", "green", "blue"], output_mode="one_hot")(colour),
        layers.IntegerLookup(vocabulary=[36, 38, 40, 42], output_mode="multi_hot")(size),
        layers.CategoryEncoding(num_tokens=8, output_mode="one_hot")(layers.Hashing(num_bins=8)(city)),
        layers.Normalization(mean=10.0, variance=4.0)(price),
        layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(
            layers.Discretization(bin_boundaries=[5.0, 10.0, 20.0])(price)
        ),
    ]
    return _keras_export(path, [colour, size, city, price], layers.Dense(1)(layers.Concatenate()(encoded)))


class _ExampleParser(tf.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.weights = tf.Variable([[0.5], [-1.0], [2.0]])
        keys = tf.constant(["a", "b"])
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, tf.constant([1, 2])), 0)

    def serve(self, examples: Any) -> dict[str, Any]:
        features = tf.io.parse_example(
            examples,
            {
                "x": tf.io.FixedLenFeature([2], tf.float32, default_value=[0.0, 0.0]),
                "tags": tf.io.VarLenFeature(tf.string),
                "ids": tf.io.RaggedFeature(tf.int64),
            },
        )
        tags = tf.sparse.to_dense(features["tags"], default_value="")
        tag_ids = tf.reduce_sum(self.table.lookup(tf.strings.lower(tags)), axis=1)
        id_sums = tf.cast(tf.reduce_sum(features["ids"], axis=1), tf.float32)
        stacked = tf.concat([features["x"], id_sums[:, tf.newaxis]], axis=1)
        return {"score": tf.matmul(stacked, self.weights)[:, 0] + tf.cast(tag_ids, tf.float32)}


def example_parsing_module(path: Path) -> Path:
    """tf.Example parsing (fixed, sparse and ragged features), a static hash table, a variable."""
    module = _ExampleParser()
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


class _Loops(tf.Module):  # type: ignore[misc]
    def serve(self, images: Any, text: Any) -> dict[str, Any]:
        resized = tf.image.resize(images, [4, 4])
        flipped = tf.map_fn(tf.image.flip_left_right, resized)  # TensorArray in a while loop
        totals = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(tf.shape(flipped)[0]):  # autograph: a While with a TensorList
            totals = totals.write(i, tf.reduce_mean(flipped[i]))
        words = tf.strings.split(tf.strings.regex_replace(text, "[,.]", " "))
        counts = tf.cast(words.row_lengths(), tf.float32)
        noise = tf.random.stateless_uniform(tf.shape(counts), seed=[1, 2], maxval=1e-6)
        hashed = tf.strings.to_hash_bucket_fast(words, 100).to_tensor()
        return {
            "brightness": totals.stack(),
            "words": counts + noise,
            "buckets": tf.sparse.reduce_sum(tf.sparse.from_dense(hashed), axis=1),
            "sorted": tf.sort(tf.nn.top_k(images[:, 0, 0, :], k=2).values, axis=-1),
        }


def control_flow_module(path: Path) -> Path:
    """tf.map_fn, an autograph loop over a TensorArray, image resizing, ragged string splits, sparse sums."""
    module = _Loops()
    serve = tf.function(
        module.serve,
        input_signature=[
            tf.TensorSpec([None, 8, 8, 3], tf.float32, name="images"),
            tf.TensorSpec([None], tf.string, name="text"),
        ],
    )
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def decodes_images_module(path: Path) -> Path:
    """``serving_default``: x string [-1] (base64url JPEG/PNG/GIF/BMP) -> y = mean pixel of each image."""

    def mean_pixel(encoded: Any) -> Any:
        image = tf.io.decode_image(tf.io.decode_base64(encoded), 3, expand_animations=False)
        return tf.reduce_mean(tf.cast(image, tf.float32))

    module = _FloatModule(lambda images: tf.map_fn(mean_pixel, images, fn_output_signature=tf.float32))
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.string, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def tf1_graph_model(path: Path) -> Path:
    """A TF1 builder graph with ref variables, a vocabulary table from a tensor, a while loop, softmax.

    Built with TF1 control flow (Enter, Exit, Switch, Merge, NextIteration), as models exported by TF 1.x are.
    """
    v1 = tf.compat.v1
    v1.disable_control_flow_v2()  # process-wide: enabled again below, whatever happens
    try:
        return _tf1_graph(path)
    finally:
        v1.enable_control_flow_v2()


def _tf1_graph(path: Path) -> Path:
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        words = v1.placeholder(tf.string, [None], name="words")
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        weight = v1.Variable(np.eye(3, dtype=np.float32), name="weight", use_resource=False)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]), tf.constant([0, 1], tf.int64)), -1
        )
        ids = table.lookup(words)
        _, doubled = v1.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), [tf.constant(0), x])
        doubled = v1.cond(tf.size(words) > 0, lambda: doubled, lambda: -doubled)
        logits = v1.nn.xw_plus_b(doubled, weight, tf.zeros([3]))
        signature = v1.saved_model.predict_signature_def(
            {"words": words, "x": x}, {"ids": ids, "probabilities": tf.nn.softmax(logits)}
        )
        with v1.Session(graph=graph) as session:
            session.run([v1.global_variables_initializer(), v1.tables_initializer()])
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}, main_op=v1.tables_initializer()
            )
            builder.save()
    return path


# Every builder above, by name: tests screen and load each one.
REALISTIC_MODELS = {
    "keras_dense": keras_dense_model,
    "keras_conv": keras_conv_model,
    "keras_recurrent": keras_recurrent_model,
    "keras_attention": keras_attention_model,
    "keras_preprocessing": keras_preprocessing_model,
    "example_parsing": example_parsing_module,
    "control_flow": control_flow_module,
    "decodes_images": decodes_images_module,
    "tf1_graph": tf1_graph_model,
}


def unlisted_op_model(path: Path) -> Path:
    """y = x + the length of tf.raw_ops.Fact()'s string: a registered op that is in no family of the screen."""
    return float_module(path, lambda x: x + tf.cast(tf.strings.length(tf.raw_ops.Fact()), tf.float32) * 0.0)


# -- batching: models whose answer for a row does or does not depend on the other rows of the call -------------

# batch_mixing_module's row-wise signature: y = x @ ROWWISE_KERNEL
ROWWISE_KERNEL = np.array([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]], dtype=np.float32)
# batch_limits_module: a row holding a value above this makes the call allocate 16 TiB (RESOURCE_EXHAUSTED) ...
OOM_ABOVE = 1e6
# ... and a row holding exactly this value makes the call wait until its release file exists.
GATE_VALUE = 1234.0


class _BatchMixing(tf.Module):  # type: ignore[misc]
    def softmax(self, x: Any) -> dict[str, Any]:
        return {"y": tf.nn.softmax(x, axis=0)}

    def center(self, x: Any) -> dict[str, Any]:
        return {"y": x - tf.reduce_mean(x, axis=0, keepdims=True)}

    def rank(self, x: Any) -> dict[str, Any]:
        return {"rank": tf.argsort(tf.argsort(x[:, 0]))}

    def rowwise(self, x: Any) -> dict[str, Any]:
        return {"y": tf.matmul(x, tf.constant(ROWWISE_KERNEL))}


def batch_mixing_module(path: Path) -> Path:
    """A tf.Module whose signatures take x float32 [-1, 3]; only ``rowwise`` answers each row on its own.

    ``serving_default``: y = softmax(x) over the batch axis (0); ``center``: y = x minus the batch's column means;
    ``rank``: rank int32 [-1], each row's rank by its first column within the call; ``rowwise``: y = x @ kernel.
    """
    module = _BatchMixing()
    spec = [tf.TensorSpec([None, 3], tf.float32, name="x")]
    signatures = {
        name: tf.function(getattr(module, method), input_signature=spec)
        for name, method in (
            ("serving_default", "softmax"),
            ("center", "center"),
            ("rank", "rank"),
            ("rowwise", "rowwise"),
        )
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def batch_limits_module(path: Path, release_file: str) -> Path:
    """``serving_default``: x float32 [-1] -> y = 2x, row by row; but a call holding a value above OOM_ABOVE fails
    with RESOURCE_EXHAUSTED (it allocates 16 TiB), and one holding GATE_VALUE first waits until ``release_file``
    exists (MatchingFiles in a while_loop, so screening needs RTSERVE_ALLOWED_FILE_OPS=MatchingFiles)."""

    def body(x: Any) -> Any:
        size = tf.where(tf.reduce_max(x) > OOM_ABOVE, tf.constant(2**42, tf.int64), tf.constant(1, tf.int64))
        allocated = tf.reduce_sum(tf.zeros(tf.reshape(size, [1]), tf.float32))
        gated = tf.reduce_any(tf.equal(x, GATE_VALUE))

        def waiting(step: Any) -> Any:
            # The pattern depends on the step (an empty suffix), so that grappler cannot hoist the look out of the loop.
            pattern = tf.strings.join([release_file, tf.strings.substr(tf.strings.as_string(step), 0, 0)])
            return tf.logical_and(step < 10_000_000, tf.size(tf.io.matching_files(pattern)) == 0)

        waited = tf.while_loop(lambda step: tf.logical_and(gated, waiting(step)), lambda step: step + 1, [0])[0]
        with tf.control_dependencies([waited]):
            return x * 2.0 + 0.0 * allocated

    return float_module(path, body)


class _HalfAndBool(tf.Module):  # type: ignore[misc]
    def serve(self, half: Any, flag: Any, small: Any) -> dict[str, Any]:
        return {"half_doubled": half * 2.0, "flag_not": tf.logical_not(flag), "small_negated": -small}


def half_bool_module(path: Path) -> Path:
    """``serving_default`` on dtypes JSON rarely carries: half float16 [-1, 2], flag bool [-1], small int8 [-1]
    -> half_doubled float16 [-1, 2] (2 * half), flag_not bool [-1], small_negated int8 [-1] (-small)."""
    module = _HalfAndBool()
    serve = tf.function(
        module.serve,
        input_signature=[
            tf.TensorSpec([None, 2], tf.float16, name="half"),
            tf.TensorSpec([None], tf.bool, name="flag"),
            tf.TensorSpec([None], tf.int8, name="small"),
        ],
    )
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


class _ToHalf(tf.Module):  # type: ignore[misc]
    def serve(self, small: Any) -> dict[str, Any]:
        return {"as_half": tf.cast(small, tf.float16), "negated": -small}


def to_half_module(path: Path) -> Path:
    """``serving_default``: small int8 [-1] -> as_half float16 [-1] (the same values), negated int8 [-1]: an FP16
    answer to an input that typed contents can carry."""
    module = _ToHalf()
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.int8, name="small")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


# `slow`'s batching in the overload scenarios (tests/fleet, bench/overload.py): a small queue that fills at once.
SLOW_BATCHING = '{"slow": {"max_batch_size": 4, "max_queue": 4, "batch_timeout_us": 0}}'


def slow_model(folder: Path, matmuls: int = 64) -> Path:
    """A SavedModel taking [-1, 4] floats to [-1, 1] whose every call multiplies 192x192 matrices ``matmuls``
    times: a fixed cost per model call (about 20 ms of CPU at 64), whatever the batch, so that capacity is easy
    to exceed."""

    class Slow(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.random.stateless_normal([192, 192], seed=[1, 2]) / 14.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def serve(self, x: Any) -> dict[str, Any]:
            def step(i: Any, state: Any) -> tuple[Any, Any]:
                return i + 1, tf.matmul(state, self.weights)

            _, state = tf.while_loop(lambda i, _: i < matmuls, step, (tf.constant(0), tf.eye(192)))
            return {"y": tf.reduce_sum(x, axis=1, keepdims=True) + 0.0 * tf.reduce_mean(state)}

    module = Slow()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


# -- TF Serving's classic test model ---------------------------------------------------------------------------
# half_plus_two: y = a * x + b with the variables a = 0.5, b = 2.0, as TF Serving's own
# servables/tensorflow/testdata/saved_model_half_plus_two.py writes it (written anew here, in both flavours).
HALF_PLUS_TWO_A = 0.5
HALF_PLUS_TWO_B = 2.0


class _HalfPlusTwo(tf.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(HALF_PLUS_TWO_A, name="a")
        self.b = tf.Variable(HALF_PLUS_TWO_B, name="b")

    def compute(self, x: Any) -> Any:
        return tf.add(tf.multiply(self.a, x), self.b)

    def predict(self, x: Any) -> dict[str, Any]:
        return {"y": self.compute(x)}

    def _feature(self, inputs: Any) -> Any:
        return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    def classify(self, inputs: Any) -> dict[str, Any]:
        return {"scores": self.compute(self._feature(inputs))}

    def regress(self, inputs: Any) -> dict[str, Any]:
        return {"outputs": self.compute(self._feature(inputs))}


def half_plus_two_tf2(path: Path) -> Path:
    """TF2 flavour (tf.saved_model.save of a tf.Module): ``serving_default`` x float [-1] -> y;
    ``classify_x_to_y`` inputs (serialized tf.Example, float feature "x" [1]) -> scores [-1, 1];
    ``regress_x_to_y`` inputs -> outputs [-1, 1]."""
    module = _HalfPlusTwo()
    examples = [tf.TensorSpec([None], tf.string, name="inputs")]
    signatures = {
        "serving_default": tf.function(module.predict, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]),
        "classify_x_to_y": tf.function(module.classify, input_signature=examples),
        "regress_x_to_y": tf.function(module.regress, input_signature=examples),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    set_signature_methods(path, {"classify_x_to_y": CLASSIFY_METHOD, "regress_x_to_y": REGRESS_METHOD})
    return path


def half_plus_two_tf1(path: Path) -> Path:
    """TF1 flavour (SavedModelBuilder, graph nodes and a variables checkpoint), TF Serving's original graph:
    "tf_example" (serialized tf.Example) is parsed for "x" [1]; x = identity(parsed x) [-1, 1]; y = a * x + b.
    ``serving_default`` predicts y from x, ``classify_x_to_y`` scores y and ``regress_x_to_y`` regresses y from
    the examples."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(HALF_PLUS_TWO_A, name="a")
        b = v1.Variable(HALF_PLUS_TWO_B, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        signatures = {
            "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": v1.saved_model.classification_signature_def(serialized, None, y),
            "regress_x_to_y": v1.saved_model.regression_signature_def(serialized, y),
        }
        _save_tf1(graph, path, signatures)
    return path


def _save_tf1(graph: Any, path: Path, signatures: dict[str, Any]) -> None:
    """Initialize the graph's variables and write it with SavedModelBuilder, tag "serve"."""
    v1 = tf.compat.v1
    with v1.Session(graph=graph) as session:
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()


# -- a lookup table initialised from an asset file -------------------------------------------------------------

# vocabulary_module: ids = the token's line in VOCABULARY, VOCABULARY_MISSING for any other token.
VOCABULARY = (b"apple", b"banana", b"cherry")
VOCABULARY_MISSING = -1


class _Vocabulary(tf.Module):  # type: ignore[misc]
    def __init__(self, vocabulary_file: str) -> None:
        super().__init__()
        self.vocabulary = tf.saved_model.Asset(vocabulary_file)
        initializer = tf.lookup.TextFileInitializer(
            self.vocabulary,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, VOCABULARY_MISSING)

    def serve(self, tokens: Any) -> dict[str, Any]:
        return {"ids": self.table.lookup(tokens)}


def vocabulary_module(path: Path, scratch: Path) -> Path:
    """``serving_default``: tokens string [-1] -> ids int64 [-1], a TF2 StaticHashTable filled at load time from
    the SavedModel's assets/ (its init op runs InitializeTableFromTextFileV2); the source file is deleted."""
    scratch.mkdir(parents=True, exist_ok=True)
    source = scratch / "vocabulary.txt"
    source.write_bytes(b"\n".join(VOCABULARY) + b"\n")
    module = _Vocabulary(str(source))
    serve = tf.function(module.serve, input_signature=[tf.TensorSpec([None], tf.string, name="tokens")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    source.unlink()  # the model must read its own copy in assets/
    return path


def without_tensor_in_graph(path: Path, signature: str, output: str) -> Path:
    """Point one output's TensorInfo at a tensor the graph does not have: the session runner cannot fetch it by
    name, while tf.saved_model.load calls the signature's function and never reads that name."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].signature_def[signature].outputs[output].name = "not_in_the_graph:0"
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    (path / "fingerprint.pb").unlink(missing_ok=True)  # it hashes the old bytes
    return path
