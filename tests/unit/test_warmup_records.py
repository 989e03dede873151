"""TF Serving's warm-up file, written with the real tensorflow-serving-api messages, replayed by the TF runtime."""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from apptools import publish
from modelfactory import example
from service.errors import ModelLoadError
from service.manager import ModelManager
from service.observability.metrics import Metrics
from service.repository.local import LocalRepository
from service.runtime.runner import RunnerChoice
from service.runtime.tensorflow import TensorFlowLoader
from service.runtime.warmup_records import MAX_RECORDS, WARMUP_FILE, masked_crc32c, read_warmup_requests
from service.settings import Settings
from service.states import VersionState
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
    demo_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, runner: RunnerChoice
) -> None:
    session_run = prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())
    records = [
        predict_log(features=FEATURES_2x4).SerializeToString(),
        classify_log(SETOSA).SerializeToString(),
        session_run.SerializeToString(),  # TF1 session runs have no signature: skipped, said in the log
    ]
    servable = TensorFlowLoader(runner=runner)(with_warmup(demo_model_dir, tmp_path, records))
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
    demo_model_dir: Path, tmp_path: Path, record: prediction_log_pb2.PredictionLog, message: str, runner: RunnerChoice
) -> None:
    servable = TensorFlowLoader(runner=runner)(with_warmup(demo_model_dir, tmp_path, [record.SerializeToString()]))
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


def test_a_version_whose_warmup_fails_never_replaces_the_serving_one(
    demo_model_dir: Path, tmp_path: Path, runner: RunnerChoice
) -> None:
    repository = LocalRepository(tmp_path / "repo")
    publish(repository, "iris", 1, demo_model_dir)
    settings = Settings(repository=str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"))
    manager = ModelManager(settings, repository, TensorFlowLoader(runner=runner), Metrics(CollectorRegistry()))
    try:
        manager.poll_once()
        bad = with_warmup(demo_model_dir, tmp_path / "bad", [predict_log(sepals=FEATURES_2x4).SerializeToString()])
        publish(repository, "iris", 2, bad)
        manager.poll_once()
        model = manager.snapshot()["iris"]
        assert sorted(model.available) == [1]
        failed = next(status for status in model.statuses if status.version == 2)
        assert failed.state == VersionState.END and "record 0 has inputs ['sepals']" in failed.error_message
    finally:
        manager.stop()


# -- the TFRecord framing, checked before TensorFlow reads it ------------------------------------------------


def frame(data: bytes, length: int | None = None, length_crc: int | None = None) -> bytes:
    """One TFRecord record; ``length`` and ``length_crc`` forge its header."""
    header = struct.pack("<Q", len(data) if length is None else length)
    crc = masked_crc32c(header) if length_crc is None else length_crc
    return header + struct.pack("<I", crc) + data + struct.pack("<I", masked_crc32c(data))


def test_the_framing_checksum_is_the_one_tensorflow_writes(tmp_path: Path) -> None:
    records = [b"", b"x", b"hello, warm-up", bytes(range(256)) * 40]
    with tf.io.TFRecordWriter(str(tmp_path / "f")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "f").read_bytes() == b"".join(frame(record) for record in records)


def write_raw(demo_model_dir: Path, tmp_path: Path, content: bytes) -> Path:
    folder = with_warmup(demo_model_dir, tmp_path, [])
    (folder / WARMUP_FILE).write_bytes(content)
    return folder


def test_a_record_claiming_terabytes_fails_the_load_instead_of_crashing_the_process(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    # A 19-byte file whose first record says (with a correct checksum) it is 16 TiB long: tf.data and
    # tf_record_iterator both die with SIGSEGV on it. Run in a child process so that a crash is a failure, not the
    # end of the test session.
    folder = write_raw(demo_model_dir, tmp_path, frame(b"abc", length=1 << 44))
    script = (
        "import sys; from pathlib import Path; from service.errors import ModelLoadError\n"
        "from service.runtime.warmup_records import read_warmup_requests\n"
        "try:\n    read_warmup_requests(Path(sys.argv[1]))\n"
        "except ModelLoadError as error:\n    print(error.message)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == (
        f"{WARMUP_FILE} is not a readable TFRecord file: record 0 ({1 << 44} bytes) runs past the end of the file"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (frame(b"abc", length_crc=12345), "record 0 has a corrupt length"),
        (frame(b"") + frame(b"abc")[:7], "record 1 is cut short"),
        (frame(b"abc", length=100), "record 0 \\(100 bytes\\) runs past the end of the file"),
        (frame(b"abc")[:-1] + b"\0", "not a readable TFRecord file: .*corrupted record"),
    ],
)
def test_a_corrupt_frame_is_a_one_line_load_error(
    demo_model_dir: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message) as raised:
        read_warmup_requests(write_raw(demo_model_dir, tmp_path, content))
    assert "\n" not in raised.value.message


def test_more_than_tf_servings_record_limit_is_a_load_error(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = write_raw(demo_model_dir, tmp_path, frame(b"") * (MAX_RECORDS + 1))
    with pytest.raises(ModelLoadError, match=f"more than {MAX_RECORDS} records"):
        read_warmup_requests(folder)


# -- tensors, and the log types that are not replayed ---------------------------------------------------------


def raw_tensor(dims: list[int], dtype: int = types_pb2.DT_FLOAT, **values: list[float]) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


def predict_record(tensor: tensor_pb2.TensorProto) -> bytes:
    record = predict_log()
    record.predict_log.request.inputs["features"].CopyFrom(tensor)
    return bytes(record.SerializeToString())


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (raw_tensor([1 << 20, 1 << 20]), "input 'features': a tensor of 1099511627776 elements in a record of"),
        (raw_tensor([1 << 40], float_val=[1.0]), "a tensor of 1099511627776 elements"),
        (raw_tensor([-1, 4]), "input 'features': a tensor of unknown size \\[-1, 4\\]"),
        (raw_tensor([2], dtype=999), "input 'features' is not a readable tensor"),
    ],
)
def test_a_tensor_that_cannot_be_decoded_within_its_record_is_a_load_error(
    demo_model_dir: Path, tmp_path: Path, tensor: tensor_pb2.TensorProto, message: str
) -> None:
    # Before: np.zeros / np.repeat of a terabyte-sized shape from a 20-byte record (MemoryError, or the OOM killer).
    folder = with_warmup(demo_model_dir, tmp_path, [predict_record(tensor)])
    with pytest.raises(ModelLoadError, match=f"record 0 {message}" if "readable" in message else message):
        read_warmup_requests(folder)


def test_a_small_one_value_tensor_fills_its_shape(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = with_warmup(demo_model_dir, tmp_path, [predict_record(raw_tensor([64, 64], float_val=[0.5]))])
    (request,) = read_warmup_requests(folder)
    np.testing.assert_array_equal(request.inputs["features"], np.full((64, 64), 0.5, np.float32))


def test_log_types_that_are_not_replayed_are_skipped_with_a_warning(
    demo_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    multi = inference_pb2.MultiInferenceRequest(
        tasks=[inference_pb2.InferenceTask(model_spec=model_pb2.ModelSpec(name="iris"), method_name="classify")],
        input=input_pb2.Input(example_list=input_pb2.ExampleList()),
    )
    regress = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(signature_name="regress"),
        input=input_pb2.Input(example_list=input_pb2.ExampleList(examples=[tf.train.Example()])),
    )
    records = [
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
        ).SerializeToString(),
        prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()).SerializeToString(),
        b"\x7a\x03abc",  # field 15: a log type from a newer tensorflow_serving, unknown here
        b"",  # no log at all
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)
        ).SerializeToString(),
    ]
    with caplog.at_level(logging.WARNING):
        requests = read_warmup_requests(with_warmup(demo_model_dir, tmp_path, records))
    assert [(r.signature_name, r.examples is not None and len(r.examples)) for r in requests] == [("regress", 1)]
    skipped = [
        r.getMessage() for r in caplog.records if "neither a predict, classify nor regress log" in r.getMessage()
    ]
    assert [message.split(" is neither")[0] for message in skipped] == [f"{WARMUP_FILE} record {i}" for i in range(4)]


def test_a_skipped_log_type_must_still_be_a_well_formed_record(demo_model_dir: Path, tmp_path: Path) -> None:
    # TF Serving parses the whole PredictionLog before it looks at the log type; so does rtserve now (the old
    # hand-written decoder never looked inside a record it skipped).
    record = b"\x2a\x03\x0a\x05a"  # multi_inference_log holding a request that runs past its end
    with pytest.raises(ModelLoadError, match="record 0 is not a PredictionLog message"):
        read_warmup_requests(with_warmup(demo_model_dir, tmp_path, [record]))
