"""The gRPC codec path in real worker processes: a serialized PredictRequest or ModelInferRequest is parsed and
decoded in a worker, an answer built and serialized there, and what a worker refuses comes back with its type and
message; the heads read a message's model as protobuf reads the whole message."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from service.api.offload import Offload
from service.codecs import tf_protos, tfserving_proto, v2_messages, v2_proto
from service.codecs.arrays import Limits
from service.errors import InvalidArgument
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
SIGNATURE = SignatureSpec(
    "serving_default",
    PREDICT_METHOD,
    {"x": TensorSpec("x", FLOAT, (-1, 2), "x:0")},
    {"y": TensorSpec("y", FLOAT, (-1, 2), "Identity:0")},
)
LIMITS = Limits(10_000, 1_000)
ROWS = np.arange(8, dtype=np.float32).reshape(4, 2)


@pytest.fixture(scope="module")
def offload() -> Iterator[Offload]:
    pool = Offload(LIMITS, 0, workers=1, wait_s=30.0, retry_after_s=1)  # everything goes to the worker
    asyncio.run(pool.warm_up())
    yield pool
    pool.close()


def _run(offload: Offload, function: object, *args: object) -> object:
    async def call() -> object:
        return await offload.call(1, function, *args)  # type: ignore[arg-type]

    return asyncio.run(call())


def _predict(model: str = "m", tensor: object = None) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tensor if tensor is not None else tf.make_tensor_proto(ROWS))
    request.output_filter.append("y")
    return bytes(request.SerializeToString())


def test_the_pool_really_is_another_process(offload: Offload) -> None:
    assert _run(offload, os.getpid) != os.getpid()


def test_a_predict_request_is_parsed_and_decoded_in_a_worker(offload: Offload) -> None:
    inputs, wanted = _run(offload, tfserving_proto.decode_predict, _predict(), SIGNATURE, LIMITS)  # type: ignore[misc]
    assert wanted == ["y"]
    np.testing.assert_array_equal(inputs["x"], ROWS)
    assert inputs["x"].dtype == np.float32


def test_a_predict_answer_built_in_a_worker_is_the_inline_one_serialized(offload: Offload) -> None:
    outputs = {"y": ROWS * 2}
    encoded = _run(offload, tfserving_proto.encode_predict, "m", 3, "serving_default", outputs, ["y"], False)
    inline = tfserving_proto.predict_response("m", 3, "serving_default", outputs, ["y"], False)
    assert predict_pb2.PredictResponse.FromString(encoded) == inline
    assert list(inline.outputs["y"].float_val) == list((ROWS * 2).reshape(-1))


def test_a_refusal_in_a_worker_comes_back_with_its_type_and_tf_servings_text(offload: Offload) -> None:
    wrong = _predict(tensor=tf.make_tensor_proto(ROWS.astype(np.int32)))
    with pytest.raises(InvalidArgument, match="DT_INT32") as refused:
        _run(offload, tfserving_proto.decode_predict, wrong, SIGNATURE, LIMITS)
    with pytest.raises(InvalidArgument) as inline:
        tfserving_proto.decode_predict(wrong, SIGNATURE, LIMITS)
    assert refused.value.message == inline.value.message


def test_bytes_that_are_no_message_are_invalid_argument_from_a_worker(offload: Offload) -> None:
    with pytest.raises(InvalidArgument, match=r"not a valid tensorflow\.serving\.PredictRequest"):
        _run(offload, tfserving_proto.decode_predict, b"\xff\xff\xff", SIGNATURE, LIMITS)
    with pytest.raises(InvalidArgument, match=r"not a valid inference\.ModelInferRequest"):
        _run(offload, v2_proto.decode_request_bytes, b"\x0a\x05ab", SIGNATURE, LIMITS)


def _infer(raw: bool) -> bytes:
    request = v2_messages.ModelInferRequest(model_name="m", model_version="1", id="r7")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[4, 2])
    if raw:
        request.raw_input_contents.append(ROWS.tobytes())
    else:
        tensor.contents.fp32_contents.extend(ROWS.reshape(-1).tolist())
    return bytes(request.SerializeToString())


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_a_model_infer_round_trip_through_a_worker(offload: Offload, raw: bool) -> None:
    decoded = _run(offload, v2_proto.decode_request_bytes, _infer(raw), SIGNATURE, LIMITS)
    assert isinstance(decoded, v2_proto.ProtoInferRequest)
    assert (decoded.id, decoded.raw) == ("r7", raw)
    np.testing.assert_array_equal(decoded.inputs["x"], ROWS)
    args = ("m", "1", decoded.id, {"y": ROWS}, {"y": FLOAT}, decoded.raw)
    encoded = _run(offload, v2_proto.encode_response_bytes, *args)
    assert v2_messages.ModelInferResponse.FromString(encoded) == v2_proto.encode_response(*args)
    stream = v2_messages.ModelStreamInferResponse.FromString(v2_proto.stream_response_bytes(encoded))
    assert stream.infer_response == v2_proto.encode_response(*args)


def test_heads_read_the_model_as_the_whole_message_does() -> None:
    # A ModelSpec sent in two parts merges; the last scalar wins: the head agrees with the full parse.
    data = _predict("first") + b"\x0a\x06\x0a\x04last"
    whole = predict_pb2.PredictRequest.FromString(data).model_spec
    assert tfserving_proto.request_target(data) == whole
    assert (whole.name, whole.signature_name) == ("last", "serving_default")
    infer = _infer(raw=True) + b"\x0a\x01n"
    head = v2_proto.infer_head(infer)
    assert (head.model_name, head.model_version, head.id) == ("n", "1", "r7")


def test_a_head_of_bytes_that_are_no_message_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"not a valid tensorflow\.serving\.PredictRequest"):
        tfserving_proto.request_target(b"\x0a\x05ab")
    with pytest.raises(InvalidArgument, match=r"not a valid inference\.ModelInferRequest"):
        v2_proto.infer_head(b"\x0a\x02\xff\xfe")  # model_name that is no UTF-8


EXAMPLES = SignatureSpec(
    "classify",
    "tensorflow/serving/classify",
    {"inputs": TensorSpec("inputs", dtype_from_tf_name("DT_STRING"), (-1,), "tf_example:0")},
    {
        "classes": TensorSpec("classes", dtype_from_tf_name("DT_STRING"), (-1, 2), "c:0"),
        "scores": TensorSpec("scores", FLOAT, (-1, 2), "s:0"),
    },
)


def test_a_classification_request_is_serialized_to_examples_and_answered_in_a_worker(offload: Offload) -> None:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    for value in (1.0, 2.0):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(value)
    data = request.SerializeToString()
    inputs, method = _run(offload, tfserving_proto.decode_examples, data, EXAMPLES, LIMITS)  # type: ignore[misc]
    assert method == EXAMPLES.method_name
    assert [tf.train.Example.FromString(e).features.feature["x"].float_list.value[0] for e in inputs["inputs"]] == [
        1.0,
        2.0,
    ]
    outputs = {"classes": np.array([[b"a", b"b"]] * 2, dtype=object), "scores": np.full((2, 2), 0.5, np.float32)}
    encoded = _run(offload, tfserving_proto.encode_examples, "m", 1, "classify", outputs, method)
    answer = classification_pb2.ClassificationResponse.FromString(encoded)
    assert [[c.label for c in row.classes] for row in answer.result.classifications] == [["a", "b"], ["a", "b"]]
    assert answer.model_spec.signature_name == "classify"


def test_a_multi_inference_request_is_checked_and_decoded_in_a_worker(offload: Offload) -> None:
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature in ("classify", "classify"):
        task = request.tasks.add(method_name="tensorflow/serving/classify")
        task.model_spec.name, task.model_spec.signature_name = "m", signature
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    data = request.SerializeToString()
    assert tfserving_proto.first_task_model(data) == "m"
    with pytest.raises(InvalidArgument, match="Duplicate evaluation of signature: classify"):
        _run(offload, tfserving_proto.decode_multi, data, LIMITS)
    request.tasks[1].model_spec.signature_name = "other"
    tasks, examples = _run(offload, tfserving_proto.decode_multi, request.SerializeToString(), LIMITS)  # type: ignore[misc]
    assert [task.model_spec.signature_name for task in tasks] == ["classify", "other"]
    assert len(examples) == 1


def test_a_worker_reads_tensorflows_messages_without_loading_its_runtime(offload: Offload) -> None:
    _run(offload, tfserving_proto.decode_predict, _predict(), SIGNATURE, LIMITS)  # the TF Serving codecs loaded
    assert _run(offload, tf_protos.runtime_loaded) is False
    assert tf_protos.runtime_loaded()  # this process has it (the test builds its tensors with tf)
