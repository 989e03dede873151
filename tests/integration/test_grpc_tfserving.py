"""TF Serving's gRPC API against the real server process, with tensorflow-serving-api's own stubs (sync and
grpc.aio), inputs from ``tf.make_tensor_proto`` and outputs read as the official example clients read them
(``.float_val``) and with ``tf.make_ndarray``; the real TensorFlow models of tests/modelfactory.py."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import wrappers_pb2
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from apptools import ServerProcess, publish, running_server, wait_until
from modelfactory import CLASSIFY_CLASSES, REGRESS_BIAS, REGRESS_WEIGHT
from service.repository.local import LocalRepository

pytestmark = pytest.mark.integration

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
MAX_ELEMENTS = 10_000
# serving.json routing of the default version: every default request to the canary; a switch still to come.
ROUTED = {
    "all_canary": b'{"default": 1, "labels": {"canary": 2}, "canary_weight": 1.0}',
    "switch_later": b'{"default": 2, "activate_at": "2999-01-01T00:00:00Z", "previous_default": 1}',
    "switched": b'{"default": 2, "activate_at": "2001-01-01T00:00:00Z", "previous_default": 1}',
}
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    multi_signature_model_dir: Path,
    classify_regress_model_dir: Path,
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "iris", 2, demo_model_dir)
    publish(repository, "multi", 1, multi_signature_model_dir)
    publish(repository, "examples", 1, classify_regress_model_dir)
    repository.write_model_file("iris", "serving.json", b'{"default": 1, "labels": {"stable": 1, "canary": 2}}')
    for model, routing in ROUTED.items():
        publish(repository, model, 1, demo_model_dir)
        publish(repository, model, 2, demo_model_dir)
        repository.write_model_file(model, "serving.json", routing)
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "RTSERVE_MODELS": "*",
        "RTSERVE_VERSION_POLICY": "all",
        "RTSERVE_POLL_INTERVAL_S": "0.5",
        "RTSERVE_MAX_TENSOR_ELEMENTS": str(MAX_ELEMENTS),
    }
    with running_server(env, tmp_path_factory.mktemp("server")) as process:
        # Ready means one AVAILABLE version per model; with the "all" policy the second may still be loading.
        def all_available() -> bool:
            for model in ("iris", *ROUTED):
                statuses = httpx.get(f"{process.url}/v1/models/{model}", timeout=10).json()["model_version_status"]
                if sorted(s["version"] for s in statuses if s["state"] == "AVAILABLE") != ["1", "2"]:
                    return False
            return True

        wait_until(all_available, 120, what="both versions of every two-version model to be AVAILABLE")
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model: str = "iris", rows: Any = (SETOSA,), **spec: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if rows is not None:
        request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, dtype=np.float32)))
    return request


def tf_example(**features: float) -> example_pb2.Example:
    return example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                name: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v])) for name, v in features.items()
            }
        )
    )


def iris_examples(*rows: list[float]) -> list[example_pb2.Example]:
    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    return [tf_example(**dict(zip(names, row, strict=True))) for row in rows]


# -- Predict ------------------------------------------------------------------------------------------------


def test_predict_answers_typed_float_val_and_the_model_spec(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    response = stub.Predict(predict_request(rows=[SETOSA, VIRGINICA]), TIMEOUT_S)
    output = response.outputs["probabilities"]
    assert not output.tensor_content  # typed fields, as TF Serving answers by default
    assert len(output.float_val) == 6  # what the official example clients read
    probabilities = tf.make_ndarray(output)
    assert probabilities.shape == (2, 3)
    assert np.argmax(probabilities, axis=1).tolist() == [0, 2]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert response.model_spec.name == "iris"
    assert response.model_spec.version.value == 1  # serving.json's default
    assert response.model_spec.signature_name == "serving_default"


def test_predict_by_version_and_by_label(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    assert stub.Predict(predict_request(version=2), TIMEOUT_S).model_spec.version.value == 2
    assert stub.Predict(predict_request(version_label="canary"), TIMEOUT_S).model_spec.version.value == 2
    assert stub.Predict(predict_request(version_label="stable"), TIMEOUT_S).model_spec.version.value == 1


def test_default_requests_follow_canary_and_activate_at_routing(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    def version_of(model: str) -> int:
        return int(stub.Predict(predict_request(model), TIMEOUT_S).model_spec.version.value)

    assert {version_of("all_canary") for _ in range(5)} == {2}
    assert version_of("switch_later") == 1
    assert version_of("switched") == 2


def test_predict_on_grpc_aio(server: ServerProcess) -> None:
    async def main() -> list[int]:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            aio_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answers = await asyncio.gather(*(aio_stub.Predict(predict_request(), timeout=TIMEOUT_S) for _ in range(8)))
            return [int(np.argmax(tf.make_ndarray(a.outputs["probabilities"]))) for a in answers]

    assert asyncio.run(main()) == [0] * 8


def test_predict_with_int64_string_and_bool_inputs(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)))
    request.inputs["tokens"].CopyFrom(tf.make_tensor_proto([b"ab", b"cde"]))
    response = stub.Predict(request, TIMEOUT_S)
    assert list(response.outputs["total"].int64_val) == [6, 15]
    assert tf.make_ndarray(response.outputs["lengths"]).tolist() == [2, 3]
    assert list(response.outputs["upper"].string_val) == [b"AB", b"CDE"]

    scale = predict_pb2.PredictRequest()
    scale.model_spec.name = "multi"
    scale.model_spec.signature_name = "scale"
    scale.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2], [3, 4]], dtype=np.float32)))
    scale.inputs["flag"].CopyFrom(tf.make_tensor_proto(np.array([True, False])))
    answer = stub.Predict(scale, TIMEOUT_S)
    assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.0, 4.0], [3.0, 4.0]]
    assert answer.model_spec.signature_name == "scale"


def test_predict_typed_values_fewer_than_the_shape_repeat_the_last(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_request(rows=None)
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(1.0, shape=[2, 4]))  # one float_val, TF's rule
    probabilities = tf.make_ndarray(stub.Predict(request, TIMEOUT_S).outputs["probabilities"])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities[0], probabilities[1])


def test_output_filter_answers_only_the_named_outputs(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2]], dtype=np.int64)))
    request.inputs["tokens"].CopyFrom(tf.make_tensor_proto([b"x"]))
    request.output_filter.append("total")
    assert list(stub.Predict(request, TIMEOUT_S).outputs) == ["total"]


# -- Classify, Regress, MultiInference --------------------------------------------------------------------


def test_classify_the_demo_model(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "iris"
    request.model_spec.signature_name = "classify"
    request.input.example_list.examples.extend(iris_examples(SETOSA, VIRGINICA))
    response = stub.Classify(request, TIMEOUT_S)
    best = [max(c.classes, key=lambda k: k.score).label for c in response.result.classifications]
    assert best == ["setosa", "virginica"]
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "classify"


def test_classify_and_regress_a_tf1_model_with_context(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "examples"
    regress.model_spec.signature_name = "regress"
    regress.input.example_list.examples.extend([tf_example(x=1.0), tf_example(x=-2.0)])
    values = [r.value for r in stub.Regress(regress, TIMEOUT_S).result.regressions]
    assert values == pytest.approx([1.0 * REGRESS_WEIGHT + REGRESS_BIAS, -2.0 * REGRESS_WEIGHT + REGRESS_BIAS])

    with_context = regression_pb2.RegressionRequest()
    with_context.model_spec.name = "examples"
    with_context.model_spec.signature_name = "regress"
    with_context.input.example_list_with_context.context.CopyFrom(tf_example(x=5.0))
    with_context.input.example_list_with_context.examples.extend([tf_example(), tf_example(x=0.5)])
    values = [r.value for r in stub.Regress(with_context, TIMEOUT_S).result.regressions]
    assert values == pytest.approx([5.0 * REGRESS_WEIGHT + REGRESS_BIAS, 0.5 * REGRESS_WEIGHT + REGRESS_BIAS])

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "examples"
    classify.model_spec.signature_name = "classify"
    classify.input.example_list.examples.append(tf_example(x=3.0))
    (classes,) = stub.Classify(classify, TIMEOUT_S).result.classifications
    assert [c.label.encode() for c in classes.classes] == list(CLASSIFY_CLASSES)
    assert classes.classes[1].score > classes.classes[0].score


def test_multi_inference_runs_every_task_on_one_input(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", "tensorflow/serving/classify"), ("regress", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "examples"
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend([tf_example(x=1.0)])
    classification, regression = stub.MultiInference(request, TIMEOUT_S).results
    assert len(classification.classification_result.classifications) == 1
    assert regression.regression_result.regressions[0].value == pytest.approx(REGRESS_WEIGHT + REGRESS_BIAS)
    assert regression.model_spec.signature_name == "regress"


# -- metadata and status ----------------------------------------------------------------------------------


def test_get_model_metadata_packs_a_signature_def_map(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "multi"
    response = stub.GetModelMetadata(request, TIMEOUT_S)
    assert response.model_spec.name == "multi"
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    ids = signatures.signature_def["serving_default"].inputs["ids"]
    assert ids.dtype == tf.int64.as_datatype_enum
    assert [d.size for d in ids.tensor_shape.dim] == [-1, -1]
    assert ids.name  # the graph's tensor name
    assert signatures.signature_def["scale"].outputs["y"].dtype == tf.float64.as_datatype_enum
    assert signatures.signature_def["scale"].method_name == "tensorflow/serving/predict"


def test_get_model_status_all_versions_and_one(models: model_service_pb2_grpc.ModelServiceStub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "iris"
    statuses = models.GetModelStatus(request, TIMEOUT_S).model_version_status
    assert sorted(s.version for s in statuses) == [1, 2]
    assert {s.state for s in statuses} == {get_model_status_pb2.ModelVersionStatus.AVAILABLE}  # 30
    assert {(s.status.error_code, s.status.error_message) for s in statuses} == {(0, "")}
    request.model_spec.version.value = 2
    assert [s.version for s in models.GetModelStatus(request, TIMEOUT_S).model_version_status] == [2]


# -- the bad-input corpus -----------------------------------------------------------------------------------


def _with(build: Callable[[predict_pb2.PredictRequest], None], base: predict_pb2.PredictRequest | None = None) -> Any:
    request = base if base is not None else predict_request()
    build(request)
    return request


def _tensor(**fields: Any) -> Any:
    return tf.make_tensor_proto(np.asarray([SETOSA], np.float32)).__class__(**fields)


def _dims(*sizes: int) -> Any:
    return tf.TensorShape(list(sizes)).as_proto() if -1 not in sizes else _raw_shape(sizes)


def _raw_shape(sizes: tuple[int, ...]) -> Any:
    shape = tf.TensorShape([1]).as_proto()
    del shape.dim[:]
    for size in sizes:
        shape.dim.add(size=size)
    return shape


BAD_PREDICTS: list[tuple[str, Callable[[], Any], grpc.StatusCode, str]] = [
    (
        "unknown model",
        lambda: predict_request("nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        lambda: predict_request(version=3),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(iris, 3)",
    ),
    (
        "unknown label",
        lambda: predict_request(version_label="gold"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: gold",
    ),
    ("empty name", lambda: predict_request(""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    (
        "unknown signature",
        lambda: predict_request(signature_name="ghost"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "ghost" not found.',
    ),
    (
        "no inputs",
        lambda: predict_request(rows=None),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({features}). "
        "Sent extra: {}. Missing but required: {features}.",
    ),
    (
        "extra input",
        lambda: _with(lambda r: r.inputs["more"].CopyFrom(tf.make_tensor_proto(1.0))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {more}",
    ),
    (
        "renamed input",
        lambda: _with(lambda r: r.inputs["other"].CopyFrom(r.inputs.pop("features"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: other",
    ),
    (
        "wrong dtype",
        lambda: _with(lambda r: r.inputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4), np.int64)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "DT_INT64, but the signature expects DT_FLOAT",
    ),
    (
        "shape the signature refuses",
        lambda: predict_request(rows=[[1.0, 2.0]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects shape [-1, 4], got [1, 2]",
    ),
    (
        "tensor_content of the wrong size",
        lambda: _with(
            lambda r: r.inputs["features"].CopyFrom(
                _tensor(dtype=1, tensor_shape=_dims(2, 4), tensor_content=b"\0" * 16)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor_content has 16 bytes, but shape [2, 4] of DT_FLOAT needs 32",
    ),
    (
        "unknown dimension",
        lambda: _with(
            lambda r: r.inputs["features"].CopyFrom(_tensor(dtype=1, tensor_shape=_dims(-1, 4), float_val=[1.0]))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "dimensions must be known",
    ),
    (
        "too many elements",
        lambda: _with(
            lambda r: r.inputs["features"].CopyFrom(_tensor(dtype=1, tensor_shape=_dims(10**12, 4), float_val=[1.0]))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"more than the limit of {MAX_ELEMENTS}",
    ),
    (
        "unsupported dtype",
        lambda: _with(lambda r: r.inputs["features"].CopyFrom(_tensor(dtype=8, tensor_shape=_dims(1, 4)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "is DT_COMPLEX64, but the signature expects DT_FLOAT",
    ),
    (
        "unknown output_filter alias",
        lambda: _with(lambda r: r.output_filter.append("nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope",
    ),
    (
        "duplicate output_filter alias",
        lambda: _with(lambda r: r.output_filter.extend(["probabilities", "probabilities"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: probabilities",
    ),
]


def assert_still_serving(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    answer = stub.Predict(predict_request(), TIMEOUT_S)
    assert int(np.argmax(tf.make_ndarray(answer.outputs["probabilities"]))) == 0


@pytest.mark.parametrize(("case", "build", "code", "text"), BAD_PREDICTS, ids=[c[0] for c in BAD_PREDICTS])
def test_bad_predicts_get_tf_servings_code_and_text(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    case: str,
    build: Callable[[], Any],
    code: grpc.StatusCode,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(build(), TIMEOUT_S)
    assert caught.value.code() == code, caught.value.details()
    assert text in caught.value.details()
    assert_still_serving(stub)


def _metadata_request(*fields: str) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = "iris"
    return request


def _regress(*examples: example_pb2.Example, signature: str = "regress") -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


def _bad_feature() -> example_pb2.Example:
    bad = example_pb2.Example()
    bad.features.feature["x"].bytes_list.value.append(b"not a float")
    return bad


def _multi(method: str) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add(method_name=method)
    task.model_spec.name = "examples"
    task.model_spec.signature_name = "regress"
    request.input.example_list.examples.append(tf_example(x=1.0))
    return request


BAD_OTHERS: list[tuple[str, str, Callable[[], Any], grpc.StatusCode, str]] = [
    (
        "metadata of an unknown version",
        "GetModelMetadata",
        lambda: get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "iris", "version": wrappers_pb2.Int64Value(value=9)}, metadata_field=["signature_def"]
        ),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(iris, 9)",
    ),
    (
        "no metadata_field",
        "GetModelMetadata",
        lambda: _metadata_request(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    ),
    (
        "bad metadata_field",
        "GetModelMetadata",
        lambda: _metadata_request("signature_def", "graph"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    ),
    (
        "metadata of an unknown model",
        "GetModelMetadata",
        lambda: get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "nope"}, metadata_field=["signature_def"]
        ),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    ("empty example list", "Regress", lambda: _regress(), grpc.StatusCode.INVALID_ARGUMENT, "Input is empty."),
    ("malformed tf.Example feature", "Regress", lambda: _regress(_bad_feature()), grpc.StatusCode.INVALID_ARGUMENT, ""),
    (
        "regress on a classify signature",
        "Regress",
        lambda: _regress(tf_example(x=1.0), signature="classify"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensorflow/serving/regress",
    ),
    (
        "unknown regress signature",
        "Regress",
        lambda: _regress(tf_example(x=1.0), signature="ghost"),
        grpc.StatusCode.INVALID_ARGUMENT,  # regressor.cc GetRegressionSignature
        "No signature was found with the name: ghost",
    ),
    (
        "multi-inference bad method",
        "MultiInference",
        lambda: _multi("tensorflow/serving/predict"),
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    ),
    (
        "multi-inference no tasks",
        "MultiInference",
        lambda: inference_pb2.MultiInferenceRequest(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Tasks field is empty.",
    ),
]


@pytest.mark.parametrize(("case", "rpc", "build", "code", "text"), BAD_OTHERS, ids=[c[0] for c in BAD_OTHERS])
def test_bad_requests_to_the_other_rpcs(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    case: str,
    rpc: str,
    build: Callable[[], Any],
    code: grpc.StatusCode,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(build(), TIMEOUT_S)
    assert caught.value.code() == code, caught.value.details()
    assert text in caught.value.details()
    assert_still_serving(stub)


BAD_STATUS: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
    ("unknown model", {"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
    (
        "unknown version",
        {"name": "iris", "version": wrappers_pb2.Int64Value(value=9)},
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model iris",
    ),
    ("empty name", {"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
]


@pytest.mark.parametrize(("case", "spec", "code", "text"), BAD_STATUS, ids=[c[0] for c in BAD_STATUS])
def test_bad_status_requests(
    models: model_service_pb2_grpc.ModelServiceStub,
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    case: str,
    spec: dict[str, Any],
    code: grpc.StatusCode,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec), TIMEOUT_S)
    assert caught.value.code() == code
    assert caught.value.details() == text
    assert_still_serving(stub)


# -- ModelService: status during a hot reload, HandleReloadConfigRequest ------------------------------------


def _config(**models: Path) -> Any:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base in models.items():
        request.config.model_config_list.config.add(name=name, base_path=str(base), model_platform="tensorflow")
    return request


def _status(models: model_service_pb2_grpc.ModelServiceStub, name: str) -> dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    return {s.version: s.state for s in models.GetModelStatus(request, TIMEOUT_S).model_version_status}


def test_status_through_a_hot_reload_and_reload_config_requests(tmp_path: Path, demo_model_dir: Path) -> None:
    states = get_model_status_pb2.ModelVersionStatus
    iris_base, other_base = tmp_path / "iris", tmp_path / "other"
    shutil.copytree(demo_model_dir, iris_base / "1")
    shutil.copytree(demo_model_dir, other_base / "5")
    model_set = json.dumps({"config": [{"name": "iris", "base_path": str(iris_base)}]})
    env = {
        "RTSERVE_MODEL_CONFIG_LIST": model_set,
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.3",
    }
    with (
        running_server(env, tmp_path) as server,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert _status(models, "iris") == {1: states.AVAILABLE}

        # A new version arrives: every status call answers while it loads and the old one unloads.
        shutil.copytree(demo_model_dir, iris_base / "2")
        seen: set[int] = set()

        def moved_on() -> bool:
            status = _status(models, "iris")
            seen.update(status.values())
            return status.get(2) == states.AVAILABLE and status.get(1, states.END) == states.END

        wait_until(moved_on, timeout_s=60, what="version 2 AVAILABLE, version 1 gone")
        assert seen <= {states.START, states.LOADING, states.AVAILABLE, states.UNLOADING, states.END}
        assert predictions.Predict(predict_request(), TIMEOUT_S).model_spec.version.value == 2

        # A new list: "other" is added and becomes servable, "iris" is dropped and unloads.
        reply = models.HandleReloadConfigRequest(_config(other=other_base), TIMEOUT_S)
        assert (reply.status.error_code, reply.status.error_message) == (0, "")

        def swapped() -> bool:
            try:
                return predictions.Predict(predict_request("other"), TIMEOUT_S).model_spec.version.value == 5
            except grpc.RpcError:
                return False

        wait_until(swapped, timeout_s=60, what="model 'other' servable")
        with pytest.raises(grpc.RpcError) as caught:
            predictions.Predict(predict_request("iris"), TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "Servable not found for request: Latest(iris)"

        # Lists that cannot be applied are refused with the reason; the current one keeps serving.
        missing = models.HandleReloadConfigRequest
        with pytest.raises(grpc.RpcError) as refused:
            missing(_config(gone=tmp_path / "nowhere"), TIMEOUT_S)
        assert refused.value.code() != grpc.StatusCode.OK
        assert "gone" in refused.value.details()
        bad_platform = _config(other=other_base)
        bad_platform.config.model_config_list.config[0].model_platform = "pytorch"
        with pytest.raises(grpc.RpcError) as invalid:
            missing(bad_platform, TIMEOUT_S)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pytorch" in invalid.value.details()
        custom = _config()
        custom.config.custom_model_config.Pack(get_model_status_pb2.GetModelStatusRequest())
        with pytest.raises(grpc.RpcError) as unsupported:
            missing(custom, TIMEOUT_S)
        assert unsupported.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Only ModelConfigList is currently supported" in unsupported.value.details()
        assert predictions.Predict(predict_request("other"), TIMEOUT_S).model_spec.version.value == 5


def test_answers_in_tensor_content_when_the_setting_asks(tmp_path: Path, demo_model_dir: Path) -> None:
    repository = LocalRepository(tmp_path / "repo")
    publish(repository, "iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_MODELS": "iris",
        "RTSERVE_GRPC__TENSOR_CONTENT": "true",  # TF Serving's --enable_serialization_as_tensor_content
    }
    with running_server(env, tmp_path) as server, grpc.insecure_channel(server.grpc_target) as opened:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(opened).Predict(predict_request(), TIMEOUT_S)
    output = answer.outputs["probabilities"]
    assert len(output.tensor_content) == 3 * 4
    assert not output.float_val
    assert int(np.argmax(tf.make_ndarray(output))) == 0


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        # ClassificationRequest.input.example_list.examples[0] = bytes that are no tf.Example
        ("/tensorflow.serving.PredictionService/Classify", b"\x12\x07\x0a\x05\x0a\x03\xff\xff\xff"),
        ("/tensorflow.serving.PredictionService/Predict", b"\x0a\xff"),  # a ModelSpec cut short
        ("/tensorflow.serving.ModelService/GetModelStatus", b"\xff\xff\xff"),
    ],
)
def test_malformed_request_bytes_are_invalid_argument(
    channel: grpc.Channel, stub: prediction_service_pb2_grpc.PredictionServiceStub, method: str, payload: bytes
) -> None:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as caught:
        call(payload, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # grpcio alone says UNKNOWN
    assert "the request is not a valid tensorflow.serving." in caught.value.details()
    assert_still_serving(stub)


def test_rpcs_count_under_protocol_grpc_tfserving(
    server: ServerProcess, stub: prediction_service_pb2_grpc.PredictionServiceStub
) -> None:
    def count(**labels: str) -> float:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "rtserve_requests_total" and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    ok, missing = (
        count(protocol="grpc-tfserving", model_name="iris", code="200"),
        count(protocol="grpc-tfserving", model_name="", code="404"),
    )
    stub.Predict(predict_request(), TIMEOUT_S)
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request("nope"), TIMEOUT_S)
    assert count(protocol="grpc-tfserving", model_name="iris", code="200") == ok + 1
    assert count(protocol="grpc-tfserving", model_name="", code="404") == missing + 1  # unknown names: one label
