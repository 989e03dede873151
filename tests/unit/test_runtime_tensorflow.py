"""The TensorFlow runtime against real SavedModels: introspection, running, warm-up and failures."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from modelfactory import (
    CLASSIFY_CLASSES,
    KERAS_BIAS,
    KERAS_KERNEL,
    REGRESS_BIAS,
    REGRESS_WEIGHT,
    example,
    unsupported_dtype_module,
)
from service.codecs.lookup import find_signature
from service.errors import Code, FailedPrecondition, Internal, InvalidArgument, ModelLoadError, Unavailable
from service.runtime.runner import RunnerChoice
from service.runtime.tensorflow import (
    TensorFlowLoader,
    TensorFlowServable,
    configure_threads,
    describe_saved_model,
    set_signature_methods,
    synthetic_inputs,
    tf_error_line,
)
from service.tensors import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    SignatureSpec,
    TensorSpec,
    dtype_from_tf_name,
)


@pytest.fixture(scope="module")
def load(runner: RunnerChoice) -> TensorFlowLoader:
    return TensorFlowLoader(runner=runner)


@pytest.fixture(scope="module")
def keras(keras_model_dir: Path, load: TensorFlowLoader) -> Iterator[TensorFlowServable]:
    servable = load(keras_model_dir)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def multi(multi_signature_model_dir: Path, load: TensorFlowLoader) -> Iterator[TensorFlowServable]:
    servable = load(multi_signature_model_dir)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def examples(classify_regress_model_dir: Path, load: TensorFlowLoader) -> Iterator[TensorFlowServable]:
    servable = load(classify_regress_model_dir)
    yield servable
    servable.close()


def described(spec: TensorSpec) -> tuple[str, str, tuple[int, ...] | None]:
    return spec.name, spec.dtype.tf_name, spec.shape


def io(signature: SignatureSpec) -> tuple[list[tuple[str, str, tuple[int, ...] | None]], ...]:
    return [described(s) for s in signature.inputs.values()], list(map(described, signature.outputs.values()))


def strings(*values: bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


# -- introspection -------------------------------------------------------------------------------------------


def test_keras_export_signatures(keras: TensorFlowServable) -> None:
    assert set(keras.signatures) == {"serve", "serving_default"}
    default = keras.signatures["serving_default"]
    assert default.method_name == PREDICT_METHOD
    assert io(default) == ([("features", "DT_FLOAT", (-1, 4))], [("output_0", "DT_FLOAT", (-1, 3))])
    assert default.inputs["features"].tensor_name == "serving_default_features:0"
    assert default.inputs["features"].is_batched


def test_multi_signature_module_signatures(multi: TensorFlowServable) -> None:
    assert set(multi.signatures) == {"serving_default", "scale"}
    default, scale = multi.signatures["serving_default"], multi.signatures["scale"]
    assert default.method_name == scale.method_name == PREDICT_METHOD
    assert io(default) == (
        [("ids", "DT_INT64", (-1, -1)), ("tokens", "DT_STRING", (-1,))],
        [("lengths", "DT_INT32", (-1,)), ("total", "DT_INT64", (-1,)), ("upper", "DT_STRING", (-1,))],
    )
    assert io(scale) == (
        [("flag", "DT_BOOL", (-1,)), ("x", "DT_FLOAT", (-1, 2))],
        [("y", "DT_DOUBLE", (-1, 2))],
    )
    assert default.inputs["tokens"].dtype.numpy == np.dtype(object)
    assert scale.inputs["x"].tensor_name == "scale_x:0"


def test_tf1_classify_regress_signatures(examples: TensorFlowServable) -> None:
    assert set(examples.signatures) == {"classify", "regress"}
    classify, regress = examples.signatures["classify"], examples.signatures["regress"]
    assert classify.method_name == CLASSIFY_METHOD
    assert regress.method_name == REGRESS_METHOD
    assert io(classify) == (
        [("inputs", "DT_STRING", (-1,))],
        [("classes", "DT_STRING", (-1, 2)), ("scores", "DT_FLOAT", (-1, 2))],
    )
    assert io(regress) == ([("inputs", "DT_STRING", (-1,))], [("outputs", "DT_FLOAT", (-1,))])
    # TF1 graphs keep the placeholder's own name.
    assert classify.inputs["inputs"].tensor_name == "tf_example:0"


def test_describe_saved_model_reads_the_protobuf_alone(multi_signature_model_dir: Path, load: TensorFlowLoader) -> None:
    assert describe_saved_model(multi_signature_model_dir) == load(multi_signature_model_dir).signatures


def test_unsupported_dtype_signature_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, load: TensorFlowLoader
) -> None:
    folder = unsupported_dtype_module(tmp_path / "1")
    with caplog.at_level(logging.WARNING, logger="service.runtime.tensorflow"):
        servable = load(folder)
    assert set(servable.signatures) == {"serving_default"}
    assert any("'complex'" in r.getMessage() and "DT_COMPLEX64" in r.getMessage() for r in caplog.records)
    # Unknown rank is None; a 0-d result still comes back as an ndarray.
    assert servable.signatures["serving_default"].inputs["v"].shape is None
    result = servable.run("serving_default", {"v": np.array(1.5, dtype=np.float32)})
    assert isinstance(result["doubled"], np.ndarray)
    assert result["doubled"].shape == ()
    assert result["doubled"] == np.float32(3.0)


# -- running -------------------------------------------------------------------------------------------------


def test_keras_model_computes_softmax(keras: TensorFlowServable) -> None:
    features = np.array([[1.0, 2.0, 3.0, 4.0], [-0.5, 0.0, 0.25, 2.0]], dtype=np.float32)
    result = keras.run("serving_default", {"features": features})
    assert set(result) == {"output_0"}
    assert result["output_0"].dtype == np.float32
    np.testing.assert_allclose(result["output_0"], softmax(features @ KERAS_KERNEL + KERAS_BIAS), rtol=1e-5)


def test_int64_and_string_inputs(multi: TensorFlowServable) -> None:
    result = multi.run(
        "serving_default",
        {"ids": np.array([[1, 2], [3, 4]], dtype=np.int64), "tokens": strings(b"ab", b"c")},
    )
    assert result["total"].dtype == np.int64
    assert result["total"].tolist() == [3, 7]
    assert result["lengths"].dtype == np.int32
    assert result["lengths"].tolist() == [2, 1]
    assert result["upper"].dtype == np.dtype(object)
    assert result["upper"].tolist() == [b"AB", b"C"]


def test_unknown_dimensions_take_any_size(multi: TensorFlowServable) -> None:
    ids = np.arange(12, dtype=np.int64).reshape(3, 4) + 2**40  # beyond int32
    result = multi.run("serving_default", {"ids": ids, "tokens": strings(b"x", b"", b"\xc3\xa9t\xc3\xa9")})
    assert result["total"].tolist() == ids.sum(axis=1).tolist()
    assert result["lengths"].tolist() == [1, 0, 5]  # bytes, not characters
    assert result["upper"].tolist() == [b"X", b"", b"\xc3\xa9T\xc3\xa9"]


def test_bool_input_and_float64_output(multi: TensorFlowServable) -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.5]], dtype=np.float32)
    result = multi.run("scale", {"x": x, "flag": np.array([True, False])})
    assert result["y"].dtype == np.float64
    assert result["y"].tolist() == [[2.0, 4.0], [3.0, 4.5]]


def test_tf1_regress_and_classify(examples: TensorFlowServable) -> None:
    inputs = {"inputs": strings(example(x=1.5), example(x=-2.0))}
    regressed = examples.run("regress", inputs)
    np.testing.assert_allclose(regressed["outputs"], [1.5 * REGRESS_WEIGHT + REGRESS_BIAS, -3.0])
    classified = examples.run("classify", inputs)
    assert classified["classes"].tolist() == [list(CLASSIFY_CLASSES)] * 2
    x = np.array([1.5, -2.0])
    np.testing.assert_allclose(classified["scores"], np.stack([sigmoid(-x), sigmoid(x)], axis=1), rtol=1e-6)


# -- errors --------------------------------------------------------------------------------------------------


def test_values_the_graph_rejects_are_invalid_argument(multi: TensorFlowServable) -> None:
    with pytest.raises(InvalidArgument) as caught:
        multi.run("serving_default", {"ids": np.array([1, 2], dtype=np.int64), "tokens": strings(b"a")})
    assert caught.value.message.startswith("Invalid reduction dimension")
    assert "\n" not in caught.value.message


def test_example_missing_a_feature_is_invalid_argument(examples: TensorFlowServable) -> None:
    with pytest.raises(InvalidArgument, match=r"^Name: <unknown>, Feature: x \(data type: float\) is required"):
        examples.run("regress", {"inputs": strings(example(y=1.0))})


def test_non_utf8_garbage_example_is_invalid_argument(examples: TensorFlowServable) -> None:
    # TF cannot decode its own error message here, since it quotes the bytes: still the client's fault.
    with pytest.raises(InvalidArgument, match=r"^Could not parse example input"):
        examples.run("classify", {"inputs": strings(b"\xff\xfe not an example")})


def test_unknown_signature_is_failed_precondition_as_in_the_data_plane(multi: TensorFlowServable) -> None:
    # One condition, one code: the runtime says what find_signature says for the data plane, word for word
    # (FAILED_PRECONDITION, TF Serving's code for it; HTTP 400).
    with pytest.raises(FailedPrecondition) as in_runtime:
        multi.run("nope", {})
    with pytest.raises(FailedPrecondition) as in_data_plane:
        find_signature(multi.signatures, "nope")
    assert in_runtime.value.code is Code.FAILED_PRECONDITION
    assert in_runtime.value.message == in_data_plane.value.message
    assert "'nope' not found in signature def (has: scale, serving_default)" in in_runtime.value.message


def test_other_failures_are_internal(multi: TensorFlowServable) -> None:
    with pytest.raises(Internal, match="signature 'scale' failed: KeyError"):
        multi.run("scale", {"x": np.zeros((1, 2), dtype=np.float32)})


def test_model_keeps_serving_after_errors(multi: TensorFlowServable) -> None:
    with pytest.raises(InvalidArgument):
        multi.run("serving_default", {"ids": np.array([1], dtype=np.int64), "tokens": strings(b"a")})
    result = multi.run("serving_default", {"ids": np.ones((1, 3), dtype=np.int64), "tokens": strings(b"a")})
    assert result["total"].tolist() == [3]


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            "Graph execution error:\n\nDetected at node Sum defined at (most recent call last):\n"
            "<stack traces unavailable>\nInvalid reduction dimension (1 for input with 1 dimension(s)\n"
            "\t [[{{node Sum}}]] [Op:__inference_signature_wrapper_134]",
            "Invalid reduction dimension (1 for input with 1 dimension(s)",
        ),
        (
            "Graph execution error:\n\nDetected at node P defined at (most recent call last):\n"
            '  File "x.py", line 3, in <module>\n\nName: <unknown>, Feature: x is required.\n'
            "\t [[{{node P}}]]",
            "Name: <unknown>, Feature: x is required.",
        ),
        (
            "{{function_node __inference_pruned_87}} Could not parse example input, value: 'g'\n"
            "\t [[{{node ParseExample/ParseExampleV2}}]] [Op:__inference_pruned_87]",
            "Could not parse example input, value: 'g'",
        ),
        (
            "cannot compute f as input #0 was expected to be a int64 tensor [Op:f]",
            "cannot compute f as input #0 was expected to be a int64 tensor",
        ),
        ("x" * 600, "x" * 497 + "..."),
    ],
)
def test_tf_error_line_keeps_the_line_that_names_the_problem(message: str, line: str) -> None:
    assert tf_error_line(message) == line


# -- loading failures ----------------------------------------------------------------------------------------


def assert_one_line_load_error(load: TensorFlowLoader, folder: Path, cause: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load(folder)
    message = caught.value.message
    assert message.startswith(f"cannot load SavedModel from {folder}: ")
    assert cause in message
    assert "\n" not in message


def test_corrupt_saved_model_pb(corrupt_model_dir: Path, load: TensorFlowLoader) -> None:
    assert_one_line_load_error(load, corrupt_model_dir, "not a valid SavedModel protobuf")


def test_folder_without_saved_model(tmp_path: Path, load: TensorFlowLoader) -> None:
    assert_one_line_load_error(load, tmp_path, "no saved_model.pb or saved_model.pbtxt")


def test_missing_variables(keras_model_dir: Path, tmp_path: Path, load: TensorFlowLoader) -> None:
    broken = Path(shutil.copytree(keras_model_dir, tmp_path / "1"))
    shutil.rmtree(broken / "variables")
    with pytest.raises(ModelLoadError) as caught:
        load(broken)
    assert caught.value.message.startswith(f"cannot load SavedModel from {broken}: ")
    assert "variables" in caught.value.message
    assert "\n" not in caught.value.message


def test_no_serve_meta_graph(multi_signature_model_dir: Path, tmp_path: Path, load: TensorFlowLoader) -> None:
    broken = Path(shutil.copytree(multi_signature_model_dir, tmp_path / "1"))
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((broken / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].meta_info_def.tags[:] = ["train"]
    (broken / "saved_model.pb").write_bytes(proto.SerializeToString())
    assert_one_line_load_error(load, broken, "no meta graph tagged 'serve' (tag sets: train)")


def test_model_without_any_supported_signature(
    multi_signature_model_dir: Path, tmp_path: Path, load: TensorFlowLoader
) -> None:
    broken = Path(shutil.copytree(multi_signature_model_dir, tmp_path / "1"))
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((broken / "saved_model.pb").read_bytes())
    for signature in proto.meta_graphs[0].signature_def.values():
        for tensor in signature.inputs.values():
            tensor.dtype = types_pb2.DT_COMPLEX128
    (broken / "saved_model.pb").write_bytes(proto.SerializeToString())
    assert_one_line_load_error(load, broken, "no servable signature with supported dtypes")


def test_set_signature_methods(multi_signature_model_dir: Path, tmp_path: Path, load: TensorFlowLoader) -> None:
    copy = Path(shutil.copytree(multi_signature_model_dir, tmp_path / "1"))
    assert (copy / "fingerprint.pb").is_file()
    with pytest.raises(KeyError, match="no signature missing"):
        set_signature_methods(copy, {"scale": REGRESS_METHOD, "missing": CLASSIFY_METHOD})
    assert describe_saved_model(copy)["scale"].method_name == PREDICT_METHOD  # all or nothing
    set_signature_methods(copy, {"scale": REGRESS_METHOD})
    assert describe_saved_model(copy)["scale"].method_name == REGRESS_METHOD
    assert not (copy / "fingerprint.pb").exists()  # it would hash the old bytes
    result = load(copy).run("scale", {"x": np.ones((1, 2), np.float32), "flag": np.array([True])})
    assert result["y"].tolist() == [[2.0, 2.0]]


def test_text_format_saved_model(multi_signature_model_dir: Path, tmp_path: Path, load: TensorFlowLoader) -> None:
    copy = Path(shutil.copytree(multi_signature_model_dir, tmp_path / "1"))
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((copy / "saved_model.pb").read_bytes())
    (copy / "saved_model.pbtxt").write_text(str(proto), encoding="utf-8")
    (copy / "saved_model.pb").unlink()
    servable = load(copy)
    assert servable.signatures == describe_saved_model(multi_signature_model_dir)
    result = servable.run("serving_default", {"ids": np.array([[5, 6]], np.int64), "tokens": strings(b"q")})
    assert result["total"].tolist() == [11]


# -- warm-up, synthetic inputs, close ------------------------------------------------------------------------


def shapes(inputs: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: array.shape for name, array in inputs.items()}


def test_synthetic_inputs(multi: TensorFlowServable) -> None:
    inputs = synthetic_inputs(multi.signatures["serving_default"], 5)
    assert shapes(inputs) == {"ids": (5, 1), "tokens": (5,)}
    assert inputs["ids"].dtype == np.int64
    assert not inputs["ids"].any()
    assert inputs["tokens"].dtype == np.dtype(object)
    assert inputs["tokens"].tolist() == [b""] * 5


def test_synthetic_inputs_keep_known_dims_and_handle_scalars_and_unknown_rank() -> None:
    float32 = dtype_from_tf_name("DT_FLOAT")
    signature = SignatureSpec(
        "s",
        PREDICT_METHOD,
        inputs={
            "fixed": TensorSpec("fixed", float32, (3, -1, 2)),
            "scalar": TensorSpec("scalar", dtype_from_tf_name("DT_BOOL"), ()),
            "anything": TensorSpec("anything", float32, None),
        },
        outputs={},
    )
    inputs = synthetic_inputs(signature, 4)
    assert shapes(inputs) == {"fixed": (3, 1, 2), "scalar": (), "anything": (4,)}
    assert inputs["scalar"].dtype == np.bool_


def test_warm_up_runs_every_signature_for_every_batch_size(
    multi_signature_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    load: TensorFlowLoader,
) -> None:
    servable = load(multi_signature_model_dir)
    calls: list[tuple[str, dict[str, tuple[int, ...]], set[str]]] = []
    run = servable.run

    def spy(signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = run(signature, inputs)
        calls.append((signature, shapes(inputs), set(outputs)))
        return outputs

    monkeypatch.setattr(servable, "run", spy)
    caplog.clear()  # the load's own INFO lines, kept when an earlier test left the loggers at INFO
    with caplog.at_level(logging.WARNING):
        servable.warm_up((1, 8))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert calls == [
        ("scale", {"flag": (1,), "x": (1, 2)}, {"y"}),
        ("scale", {"flag": (8,), "x": (8, 2)}, {"y"}),
        ("serving_default", {"ids": (1, 1), "tokens": (1,)}, {"lengths", "total", "upper"}),
        ("serving_default", {"ids": (8, 1), "tokens": (8,)}, {"lengths", "total", "upper"}),
    ]


def test_warm_up_failure_is_a_warning_not_a_load_failure(
    examples: TensorFlowServable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.runtime.tensorflow"):
        examples.warm_up((1, 4))
    warned = sorted(r.getMessage() for r in caplog.records)
    # One warning per signature (not per batch size): empty strings are tf.Examples without the feature "x".
    assert len(warned) == 2
    assert "'classify' does not run on synthetic inputs" in warned[0]
    assert "'regress' does not run on synthetic inputs" in warned[1]
    assert all("Feature: x" in message for message in warned)
    assert examples.run("regress", {"inputs": strings(example(x=0.0))})["outputs"].tolist() == [REGRESS_BIAS]


def test_keras_model_warms_up(keras: TensorFlowServable, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        keras.warm_up((1, 2, 32))
    assert not caplog.records


def test_close_drops_the_model(multi_signature_model_dir: Path, load: TensorFlowLoader) -> None:
    servable = load(multi_signature_model_dir)
    servable.close()
    assert set(servable.signatures) == {"serving_default", "scale"}  # still describable for status pages
    with pytest.raises(Unavailable, match="has been unloaded") as unloaded:
        servable.run("scale", {"x": np.zeros((1, 2), np.float32), "flag": np.array([False])})
    with pytest.raises(Unavailable, match="has been unloaded") as missing:  # unloaded first, whatever is asked
        servable.run("nope", {})
    for caught in (unloaded, missing):  # the folder is a cache path: no message from here names it
        assert str(multi_signature_model_dir) not in caught.value.message


# -- thread pools --------------------------------------------------------------------------------------------


def test_configure_threads_before_tensorflow_starts() -> None:
    script = (
        "import logging, tensorflow as tf\n"
        "from service.runtime.tensorflow import configure_threads\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "configure_threads(3, 2)\n"
        "configure_threads(3, 2)\n"  # the same values again: a no-op
        "tf.constant(1.0) + 1.0\n"  # starts the runtime with those pools
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
        "configure_threads(5, 5)\n"  # too late: a warning, not a crash
        "configure_threads(3, 2)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "2"]
    warnings = [line for line in done.stderr.splitlines() if "already initialized" in line]
    assert len(warnings) == 1
    assert "cannot change to intra_op=5 inter_op=5" in warnings[0]


def test_configure_threads_after_start_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    _ = tf.constant(1.0) + 1.0
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    with caplog.at_level(logging.WARNING, logger="service.runtime.tensorflow"):
        configure_threads(intra, inter)
        assert not caplog.records
        configure_threads(intra + 1, inter + 1)
    assert "already initialized" in caplog.records[0].getMessage()
    assert tf.config.threading.get_intra_op_parallelism_threads() == intra


@pytest.mark.parametrize("style", ["tf2", "tf1"])
def test_abort_cancels_a_warm_up_that_loops_for_ever_and_nothing_else(
    tmp_path: Path, style: str, load: TensorFlowLoader
) -> None:
    """The load deadline's tool: abort() ends a data-dependent while_loop on warm-up zeros, on that thread only."""
    import threading

    from modelfactory import loops_on_zeros_model, tf1_loops_on_zeros_model
    from service.errors import DeadlineExceeded

    loader = load
    build = loops_on_zeros_model if style == "tf2" else tf1_loops_on_zeros_model
    looping = loader(build(tmp_path / "loops"))
    other = loader(loops_on_zeros_model(tmp_path / "other"))  # a second model serving on another thread
    assert looping.run("serving_default", {"x": np.array([2.0], np.float32)})["y"].tolist() == [2.0]
    outcome: list[BaseException | None] = []

    def warm_up() -> None:
        try:
            with looping.abortable():
                looping.warm_up((1,))
            outcome.append(None)
        except BaseException as error:  # the test reads it below
            outcome.append(error)

    thread = threading.Thread(target=warm_up, daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the warm-up should loop until aborted"
    served: list[float] = []
    server = threading.Thread(
        target=lambda: served.extend(
            other.run("serving_default", {"x": np.array([1.0], np.float32)})["y"].tolist() for _ in range(200)
        ),
        daemon=True,
    )
    server.start()
    looping.abort()
    thread.join(10)
    server.join(10)
    assert not thread.is_alive(), "abort() must end the while_loop"
    assert isinstance(outcome[0], DeadlineExceeded)
    assert served == [[1.0]] * 200  # the other model's calls on another thread were never cancelled


def test_a_failed_call_inside_the_abortable_scope_does_not_cancel_the_next(
    demo_model_dir: Path, load: TensorFlowLoader
) -> None:
    """TensorFlow cancels a call's CancellationManager when one of its ops fails: a manager shared by the calls
    of a warm-up made every call after the first failing signature fail as 'cancelled' (iris's classify, which
    cannot run on synthetic inputs, cancelled the warm-up and the batching check of serving_default)."""
    servable = load(demo_model_dir)
    features = {"features": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)}
    with servable.abortable():
        with pytest.raises(InvalidArgument):
            servable.run("classify", {"inputs": np.array([b"not an example"], object)})
        probabilities = servable.run("serving_default", features)
    assert next(iter(probabilities.values())).shape == (1, 3)


# -- signature runners ---------------------------------------------------------------------------------------


def test_each_fixture_runs_on_the_runner_it_asked_for(
    keras: TensorFlowServable, multi: TensorFlowServable, examples: TensorFlowServable, runner: str
) -> None:
    assert keras.runner == multi.runner == examples.runner == runner


def test_the_default_runner_is_the_session_for_keras_tf_module_and_tf1_models(
    keras_model_dir: Path, multi_signature_model_dir: Path, classify_regress_model_dir: Path
) -> None:
    for folder in (keras_model_dir, multi_signature_model_dir, classify_regress_model_dir):
        servable = TensorFlowLoader()(folder)
        try:
            assert servable.runner == "session", folder
        finally:
            servable.close()


def test_a_table_filled_from_an_asset_file_answers_through_the_session(tmp_path: Path, runner: RunnerChoice) -> None:
    """The SavedModel's init op fills the table from its assets/ copy of the vocabulary (the source is gone)."""
    from modelfactory import VOCABULARY, VOCABULARY_MISSING, vocabulary_module

    folder = vocabulary_module(tmp_path / "vocabulary" / "1", tmp_path / "scratch")
    assert (folder / "assets" / "vocabulary.txt").is_file()
    servable = TensorFlowLoader(["InitializeTableFromTextFileV2"], runner=runner)(folder)
    assert servable.runner == runner
    servable.warm_up((1, 4))
    ids = servable.run("serving_default", {"tokens": strings(b"cherry", b"plum", *VOCABULARY)})["ids"]
    assert ids.dtype == np.int64
    assert ids.tolist() == [2, VOCABULARY_MISSING, 0, 1, 2]
    servable.close()


def test_a_version_the_session_cannot_serve_falls_back_under_auto_and_fails_under_session(
    keras_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from modelfactory import without_tensor_in_graph

    folder = without_tensor_in_graph(
        Path(shutil.copytree(keras_model_dir, tmp_path / "1")), "serving_default", "output_0"
    )
    with caplog.at_level(logging.WARNING, logger="service.runtime.tensorflow"):
        servable = TensorFlowLoader()(folder)
    assert servable.runner == "function"
    warned = [r.getMessage() for r in caplog.records if "session runner cannot serve" in r.getMessage()]
    assert len(warned) == 1
    assert "'serving_default'" in warned[0] and "not_in_the_graph:0" in warned[0]
    features = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(
        servable.run("serving_default", {"features": features})["output_0"],
        softmax(features @ KERAS_KERNEL + KERAS_BIAS),
        rtol=1e-5,
    )
    servable.close()
    with pytest.raises(ModelLoadError) as caught:
        TensorFlowLoader(runner="session")(folder)
    assert caught.value.message.startswith(f"cannot load SavedModel from {folder}: the session runner cannot serve")
    assert "not_in_the_graph:0" in caught.value.message
    assert "\n" not in caught.value.message


def test_the_signature_runner_setting_reaches_the_loader(
    keras_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from service.app import default_loader
    from service.settings import Settings

    assert Settings().signature_runner == "auto"
    monkeypatch.setenv("RTSERVE_SIGNATURE_RUNNER", "function")
    settings = Settings()
    assert settings.signature_runner == "function"
    servable = default_loader(settings)(keras_model_dir)
    assert isinstance(servable, TensorFlowServable)
    assert servable.runner == "function"
    servable.close()
    monkeypatch.setenv("RTSERVE_SIGNATURE_RUNNER", "sessions")
    with pytest.raises(ValidationError, match="signature_runner"):
        Settings()
