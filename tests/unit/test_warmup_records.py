"""TF Serving's warm-up file, written with the real tensorflow-serving-api messages, replayed by the TF runtime."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from apptools import publish
from modelfactory import example
from service.errors import ModelLoadError
from service.manager import END, ModelManager
from service.observability.metrics import Metrics
from service.repository.local import LocalRepository
from service.runtime.tensorflow import TensorFlowLoader
from service.runtime.warmup_records import WARMUP_FILE, read_warmup_requests
from service.settings import Settings
from service.tools.demo import FEATURES

SETOSA = [5.1, 3.5, 1.4, 0.2]


def predict_log(signature: str = "", **inputs: np.ndarray) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="iris", signature_name=signature))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def classify_log(*rows: list[float]) -> prediction_log_pb2.PredictionLog:
    examples = [tf.train.Example.FromString(example(**dict(zip(FEATURES, row, strict=True)))) for row in rows]
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="iris", signature_name="classify"),
        input=input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples)),
    )
    return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))


def with_warmup(demo_model_dir: Path, tmp_path: Path, records: list[bytes]) -> Path:
    folder = tmp_path / "iris" / "1"
    shutil.copytree(demo_model_dir, folder)
    (folder / WARMUP_FILE).parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(folder / WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record)
    return folder


FEATURES_2x4 = np.array([SETOSA, SETOSA], dtype=np.float32)


def test_predict_and_classify_records_are_read_as_tf_serving_writes_them(demo_model_dir: Path, tmp_path: Path) -> None:
    records = [
        predict_log(features=FEATURES_2x4).SerializeToString(),
        classify_log(SETOSA, SETOSA, SETOSA).SerializeToString(),
    ]
    requests = read_warmup_requests(with_warmup(demo_model_dir, tmp_path, records))
    assert [r.signature_name for r in requests] == ["", "classify"]
    np.testing.assert_array_equal(requests[0].inputs["features"], FEATURES_2x4)
    assert requests[0].inputs["features"].dtype == np.float32
    examples = requests[1].examples
    assert examples is not None and len(examples) == 3
    assert tf.train.Example.FromString(examples[0]).features.feature["petal_length"].float_list.value[0] == (
        pytest.approx(1.4)
    )


def test_a_version_replays_its_records_while_warming_up(
    demo_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session_run = prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())
    records = [
        predict_log(features=FEATURES_2x4).SerializeToString(),
        classify_log(SETOSA).SerializeToString(),
        session_run.SerializeToString(),  # TF1 session runs have no signature: skipped, said in the log
    ]
    servable = TensorFlowLoader()(with_warmup(demo_model_dir, tmp_path, records))
    with caplog.at_level(logging.INFO):
        servable.warm_up((1,))
    assert any("replayed 2 warm-up requests" in r.getMessage() for r in caplog.records)
    assert any("record 2 is neither a predict, classify nor regress log" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (predict_log(sepals=FEATURES_2x4), "record 0 has inputs ['sepals'], signature 'serving_default' takes"),
        (predict_log(features=np.ones((2, 3), np.float32)), "record 0 failed"),
        (predict_log("nope", features=FEATURES_2x4), "record 0 names signature 'nope'"),
    ],
)
def test_a_record_that_does_not_run_fails_the_load(
    demo_model_dir: Path, tmp_path: Path, record: prediction_log_pb2.PredictionLog, message: str
) -> None:
    servable = TensorFlowLoader()(with_warmup(demo_model_dir, tmp_path, [record.SerializeToString()]))
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        servable.warm_up((1,))


def test_regress_records_and_unsupported_example_inputs(demo_model_dir: Path, tmp_path: Path) -> None:
    with_context = regression_pb2.RegressionRequest(
        input=input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext())
    )
    record = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=with_context))
    folder = with_warmup(demo_model_dir, tmp_path, [record.SerializeToString()])
    with pytest.raises(ModelLoadError, match="only example_list inputs are supported"):
        read_warmup_requests(folder)


@pytest.mark.parametrize(
    "record",
    [
        b"\x32\xff\xff\xff\xff\x0f",  # predict_log longer than the record
        b"\x32\x03\x0a\x01",  # a request cut short
        b"\x32\x02\x08\x80",  # a varint that never ends
        b"\x37",  # wire type 7 does not exist
    ],
)
def test_malformed_records_are_a_load_error(demo_model_dir: Path, tmp_path: Path, record: bytes) -> None:
    with pytest.raises(ModelLoadError, match="record 0"):
        read_warmup_requests(with_warmup(demo_model_dir, tmp_path, [record]))


def test_a_file_that_is_not_a_tfrecord_file_is_a_load_error(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = with_warmup(demo_model_dir, tmp_path, [])
    (folder / WARMUP_FILE).write_bytes(b"not a TFRecord file at all, just text")
    with pytest.raises(ModelLoadError, match="not a readable TFRecord file"):
        read_warmup_requests(folder)


def test_no_warmup_file_means_no_requests(demo_model_dir: Path) -> None:
    assert read_warmup_requests(demo_model_dir) == []


def test_a_version_whose_warmup_fails_never_replaces_the_serving_one(demo_model_dir: Path, tmp_path: Path) -> None:
    repository = LocalRepository(tmp_path / "repo")
    publish(repository, "iris", 1, demo_model_dir)
    settings = Settings(repository=str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"))
    manager = ModelManager(settings, repository, TensorFlowLoader(), Metrics(CollectorRegistry()))
    try:
        manager.poll_once()
        bad = with_warmup(demo_model_dir, tmp_path / "bad", [predict_log(sepals=FEATURES_2x4).SerializeToString()])
        publish(repository, "iris", 2, bad)
        manager.poll_once()
        model = manager.snapshot()["iris"]
        assert sorted(model.available) == [1]
        failed = next(status for status in model.statuses if status.version == 2)
        assert failed.state == END and "record 0 has inputs ['sepals']" in failed.error_message
    finally:
        manager.stop()
