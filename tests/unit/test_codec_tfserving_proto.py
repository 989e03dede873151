"""TF Serving's gRPC messages <-> the data plane: model_config_list as a model set, SignatureDefMap, classify and
regress results, output_filter and the input checks with TF Serving's texts, numeric states."""

from __future__ import annotations

import enum

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from service.codecs.arrays import Limits
from service.codecs.tfserving_proto import (
    check_output_filter,
    classification_result,
    decode_inputs,
    model_set_of,
    regression_result,
    signature_def_map,
    state_number,
)
from service.errors import InvalidArgument
from service.policy import VersionPolicy
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT, STRING = dtype_from_tf_name("DT_FLOAT"), dtype_from_tf_name("DT_STRING")
SIGNATURE = SignatureSpec(
    "serving_default",
    PREDICT_METHOD,
    {"a": TensorSpec("a", FLOAT, (-1, 2), "a:0"), "b": TensorSpec("b", STRING, None, "b:0")},
    {"y": TensorSpec("y", FLOAT, (-1,), "Identity:0"), "z": TensorSpec("z", FLOAT, (), "Identity_1:0")},
)
LIMITS = Limits(1000)

# g3doc/serving_config.md's example, as a TF Serving config file spells it.
CONFIG = """
model_config_list {
  config {
    name: 'm' base_path: '/models/m' model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 } version_labels { key: 'canary' value: 43 }
  }
  config { name: 'n' base_path: 's3://bucket/n' model_version_policy { all {} } }
  config { name: 'o' base_path: '/models/o' model_version_policy { latest { num_versions: 2 } } }
  config { name: 'p' base_path: '/models/p' }
}
"""


def test_a_tf_serving_model_config_list_becomes_the_model_set() -> None:
    config = text_format.Parse(CONFIG, model_server_config_pb2.ModelServerConfig())
    models = model_set_of(config.model_config_list).by_name()
    assert models["m"].base_path == "/models/m"
    assert models["m"].policy == VersionPolicy("specific", specific=frozenset({42, 43}))
    assert models["m"].version_labels == {"stable": 42, "canary": 43}
    assert models["n"].policy == VersionPolicy("all")
    assert models["o"].policy == VersionPolicy("latest", latest=2)
    assert models["p"].policy == VersionPolicy("latest", latest=1)
    assert models["p"].model_platform == "tensorflow"


def test_a_model_config_list_that_cannot_be_a_model_set_is_invalid_argument() -> None:
    config = model_server_config_pb2.ModelConfigList()
    config.config.add(name="m", base_path="/a")
    config.config.add(name="m", base_path="/b")
    with pytest.raises(InvalidArgument, match=r"model_config_list: .*listed more than once"):
        model_set_of(config)
    platform = model_server_config_pb2.ModelConfigList()
    platform.config.add(name="m", base_path="/a", model_platform="pytorch")
    with pytest.raises(InvalidArgument, match="pytorch"):
        model_set_of(platform)


def test_signature_def_map_has_tensorflows_shapes() -> None:
    signature = signature_def_map({"serving_default": SIGNATURE}).signature_def["serving_default"]
    assert signature.method_name == PREDICT_METHOD
    assert signature.inputs["a"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in signature.inputs["a"].tensor_shape.dim] == [-1, 2]
    assert signature.inputs["a"].name == "a:0"
    assert signature.inputs["b"].tensor_shape.unknown_rank
    assert signature.outputs["z"].tensor_shape.dim == []


def test_output_filter_follows_tf_serving() -> None:
    assert check_output_filter([], SIGNATURE) == ["y", "z"]
    assert check_output_filter(["z"], SIGNATURE) == ["z"]
    with pytest.raises(InvalidArgument, match=r"^output tensor alias not found in signature: w Outputs expected"):
        check_output_filter(["w"], SIGNATURE)
    with pytest.raises(InvalidArgument, match=r"^duplicate output tensor alias: y$"):
        check_output_filter(["y", "y"], SIGNATURE)


def test_inputs_are_checked_against_the_signature_in_tf_servings_words() -> None:
    a = tf.make_tensor_proto(np.zeros((1, 2), np.float32))
    b = tf.make_tensor_proto([b"x"])
    decoded = decode_inputs({"a": a, "b": b}, SIGNATURE, LIMITS)
    assert decoded["a"].shape == (1, 2)
    assert decoded["b"].tolist() == [b"x"]
    with pytest.raises(InvalidArgument) as caught:
        decode_inputs({"a": a, "c": b, "d": b}, SIGNATURE, LIMITS)
    assert caught.value.message == (
        "input size does not match signature: 3!=2 len({a,c,d}) != len({a,b}). "
        "Sent extra: {c,d}. Missing but required: {b}."
    )
    with pytest.raises(InvalidArgument, match=r"^input tensor alias not found in signature: c\. Inputs expected"):
        decode_inputs({"a": a, "c": b}, SIGNATURE, LIMITS)
    with pytest.raises(InvalidArgument, match="input 'b' is DT_FLOAT, but the signature expects DT_STRING"):
        decode_inputs({"a": a, "b": a}, SIGNATURE, LIMITS)


def test_classify_and_regress_results() -> None:
    result = classification_result(
        {"classes": np.array([[b"x", b"y"]], dtype=object), "scores": np.array([[0.25, 0.75]], np.float32)}
    )
    ((first, second),) = [list(c.classes) for c in result.classifications]
    assert (first.label, first.score, second.label, second.score) == ("x", 0.25, "y", 0.75)
    assert [r.value for r in regression_result({"outputs": np.array([[1.5], [2.5]])}).regressions] == [1.5, 2.5]
    with pytest.raises(InvalidArgument, match="no output named 'outputs'"):
        regression_result({"y": np.zeros(2)})


class _State(enum.StrEnum):  # the harness helper's VersionState: the same strings
    AVAILABLE = "AVAILABLE"


def test_states_are_tf_servings_numbers_by_name() -> None:
    assert [state_number(s) for s in ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")] == [10, 20, 30, 40, 50]
    assert state_number(_State.AVAILABLE) == 30
    assert state_number("SOMETHING_ELSE") == 0
