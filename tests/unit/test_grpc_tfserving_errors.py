"""The data plane's structured errors worded as TF Serving words them on its gRPC services (the texts clients
match), while their REST messages stay; and the ModelSpec and MultiInference checks of TF Serving."""

from __future__ import annotations

import pickle

import grpc
import pytest
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import inference_pb2, model_pb2

from service.api.grpc.observe import status_code
from service.api.grpc.tfserving import target_of, tf_serving_error
from service.codecs.lookup import UnknownSignature, find_signature
from service.codecs.tfserving_proto import check_tasks
from service.dataplane import LabelNotFound, ModelNotServed, StatusNotFound, Target, VersionNotAvailable
from service.errors import Code, InvalidArgument, NotFound, Overloaded, ServingError, Unavailable, Unimplemented

M = "m"
CASES: list[tuple[ServingError, Code, str]] = [
    (ModelNotServed("rest", Target(M)), Code.NOT_FOUND, "Servable not found for request: Latest(m)"),
    (ModelNotServed("rest", Target(M, version=3)), Code.NOT_FOUND, "Servable not found for request: Specific(m, 3)"),
    (VersionNotAvailable("rest", Target(M), None), Code.NOT_FOUND, "Servable not found for request: Latest(m)"),
    (VersionNotAvailable("rest", Target(M, 3), 3), Code.NOT_FOUND, "Servable not found for request: Specific(m, 3)"),
    # A label resolves to a version first (server_core.cc), so a label on an unloaded version names the version.
    (
        VersionNotAvailable("rest", Target(M, label="l"), 4),
        Code.NOT_FOUND,
        "Servable not found for request: Specific(m, 4)",
    ),
    (LabelNotFound("rest", Target(M, label="l")), Code.INVALID_ARGUMENT, "Unrecognized servable version label: l"),
    (ModelNotServed("rest", Target(M, label="l")), Code.INVALID_ARGUMENT, "Unrecognized servable version label: l"),
    (StatusNotFound("rest", Target(M)), Code.NOT_FOUND, "Could not find any versions of model m"),
    (StatusNotFound("rest", Target(M, 9)), Code.NOT_FOUND, "Could not find version 9 of model m"),
    (UnknownSignature("rest", "x"), Code.FAILED_PRECONDITION, 'Serving signature key "x" not found.'),
]  # fmt: skip


@pytest.mark.parametrize(("error", "code", "text"), CASES, ids=[type(c[0]).__name__ + c[2][-12:] for c in CASES])
def test_tf_serving_words_the_data_planes_errors(error: ServingError, code: Code, text: str) -> None:
    assert error.message == "rest"  # REST keeps its own message; only the gRPC front end rewords
    worded = tf_serving_error(error)
    assert (worded.code, worded.message) == (code, text)
    assert status_code(worded.code).name == code.name


@pytest.mark.parametrize("error", [c[0] for c in CASES], ids=[type(c[0]).__name__ + c[2][-12:] for c in CASES])
def test_structured_errors_cross_process_boundaries_whole(error: ServingError) -> None:
    # Decoders run in worker processes (service/api/offload.py): what they raise comes back pickled.
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.message, vars(copy)) == (type(error), error.message, vars(error))


def test_other_errors_pass_through_unchanged() -> None:
    for error in (InvalidArgument("x"), NotFound("y"), Unavailable("queue full")):
        assert tf_serving_error(error) is error


def test_a_full_queue_is_unavailable_at_once() -> None:
    full = Overloaded("model 'm' version 1 has 64 requests queued", retry_after_s=1)
    assert tf_serving_error(full) is full
    assert status_code(full.code) is grpc.StatusCode.UNAVAILABLE


def test_a_missing_signature_is_failed_precondition_with_the_key() -> None:
    with pytest.raises(UnknownSignature) as caught:
        find_signature({}, "ghost")
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.key == "ghost"
    with pytest.raises(UnknownSignature) as default:
        find_signature({}, None)
    assert default.value.key == "serving_default"


def test_model_spec_addressing() -> None:
    assert target_of(model_pb2.ModelSpec(name=M)) == Target(M)
    assert target_of(model_pb2.ModelSpec(name=M, version=wrappers_pb2.Int64Value(value=0))) == Target(M, version=0)
    assert target_of(model_pb2.ModelSpec(name=M, version_label="stable")) == Target(M, label="stable")
    with pytest.raises(InvalidArgument, match=r"^ModelSpec has no name specified\.$"):
        target_of(model_pb2.ModelSpec(version_label="stable"))


def _task(name: str, signature: str, method: str) -> inference_pb2.InferenceTask:
    return inference_pb2.InferenceTask(
        model_spec=model_pb2.ModelSpec(name=name, signature_name=signature), method_name=method
    )


def test_multi_inference_checks_follow_tf_serving() -> None:
    classify, regress = "tensorflow/serving/classify", "tensorflow/serving/regress"
    assert len(check_tasks([_task(M, "a", classify), _task(M, "b", regress)])) == 2
    with pytest.raises(InvalidArgument, match=r"^Tasks field is empty\.$"):
        check_tasks([])
    with pytest.raises(InvalidArgument, match="must access the same model name"):
        check_tasks([_task(M, "a", classify), _task("n", "b", regress)])
    with pytest.raises(InvalidArgument, match=r"^Duplicate evaluation of signature: a$"):
        check_tasks([_task(M, "a", classify), _task(M, "a", regress)])
    with pytest.raises(Unimplemented, match=r"^Unsupported signature method_name: tensorflow/serving/predict$"):
        check_tasks([_task(M, "a", "tensorflow/serving/predict")])
