"""The data plane's structured errors worded as TF Serving words them on its gRPC services and its REST API (the
texts and codes clients match), while the V2 APIs' messages stay; and the ModelSpec and MultiInference checks of
TF Serving."""

from __future__ import annotations

import pickle

import grpc
import pytest
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import inference_pb2, model_pb2

from service.api.grpc.observe import status_code
from service.api.grpc.tfserving import target_of
from service.api.tfserving_errors import Front, tf_serving_error
from service.codecs.json_io import MalformedJson, parse_object
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
    (
        UnknownSignature("rest", "x", "tensorflow/serving/classify"),
        Code.INVALID_ARGUMENT,
        "No signature was found with the name: x",
    ),
    (
        UnknownSignature("rest", "x", "tensorflow/serving/regress"),
        Code.INVALID_ARGUMENT,
        "No signature was found with the name: x",
    ),
]  # fmt: skip
# Where TF Serving's REST API words a failure otherwise than its gRPC services (http_rest_api_handler.cc,
# json_tensor.cc); every other case is worded the same on both.
REST_ONLY: list[tuple[ServingError, Code, str]] = [
    (UnknownSignature("rest", "x"), Code.INVALID_ARGUMENT, 'Serving signature name: "x" not found in signature def'),
    (MalformedJson("rest", "unexpected end of data", 6), Code.INVALID_ARGUMENT,
     "JSON Parse error: unexpected end of data at offset: 6"),
    (MalformedJson("rest", empty=True), Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty"),
    (MalformedJson("rest nesting"), Code.INVALID_ARGUMENT, "JSON Parse error: rest nesting"),
]  # fmt: skip
REST_CASES = [c for c in CASES if not (isinstance(c[0], UnknownSignature) and c[0].method is None)] + REST_ONLY
FRONTS = [("grpc", *case) for case in CASES] + [("rest", *case) for case in REST_CASES]


@pytest.mark.parametrize(
    ("front", "error", "code", "text"), FRONTS, ids=[f"{c[0]}-{type(c[1]).__name__}-{c[3][-12:]}" for c in FRONTS]
)
def test_tf_serving_words_the_data_planes_errors(front: Front, error: ServingError, code: Code, text: str) -> None:
    assert "rest" in error.message  # the V2 APIs keep the error's own message; TF Serving's front ends reword
    worded = tf_serving_error(error, front)
    assert (worded.code, worded.message) == (code, text)
    assert status_code(worded.code).name == code.name


def test_a_body_that_does_not_parse_keeps_its_v2_message_and_tells_tf_serving_where() -> None:
    with pytest.raises(MalformedJson) as caught:
        parse_object(b'{"instances": [1, 2')
    assert caught.value.message.startswith("malformed JSON: ")  # the V2 APIs' words, as before
    assert tf_serving_error(caught.value, "grpc") is caught.value  # gRPC bodies are protobuf: never JSON
    assert tf_serving_error(caught.value, "rest").message == "JSON Parse error: unexpected end of data at offset: 19"
    with pytest.raises(MalformedJson) as empty:
        parse_object(b"")
    assert tf_serving_error(empty.value, "rest").message == "JSON Parse error: The document is empty"


ALL_ERRORS = [c[0] for c in CASES + REST_ONLY]


@pytest.mark.parametrize("error", ALL_ERRORS, ids=[f"{type(e).__name__}-{i}" for i, e in enumerate(ALL_ERRORS)])
def test_structured_errors_cross_process_boundaries_whole(error: ServingError) -> None:
    # Decoders run in worker processes (service/api/offload.py): what they raise comes back pickled.
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.message, vars(copy)) == (type(error), error.message, vars(error))


def test_other_errors_pass_through_unchanged() -> None:
    for error in (InvalidArgument("x"), NotFound("y"), Unavailable("queue full")):
        assert tf_serving_error(error, "grpc") is error
        assert tf_serving_error(error, "rest") is error


def test_a_full_queue_is_unavailable_at_once() -> None:
    full = Overloaded("model 'm' version 1 has 64 requests queued", retry_after_s=1)
    assert tf_serving_error(full, "grpc") is full
    assert tf_serving_error(full, "rest") is full
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
