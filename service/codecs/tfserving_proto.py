"""TF Serving's gRPC messages (tensorflow_serving/apis/*.proto) <-> the data plane's arrays and answers.

Pure functions over the generated messages of ``tensorflow-serving-api``. Where TF Serving has a message a client
may match, the text is TF Serving's, with its source named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import any_pb2, json_format, wrappers_pb2
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)

from service.codecs import heads, tensorproto, tfserving
from service.codecs.arrays import Limits
from service.errors import Code, InvalidArgument, Unimplemented
from service.model_set import ModelSet, parse_model_set
from service.tensors import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, SignatureSpec, TensorSpec

SIGNATURE_DEF_FIELD = "signature_def"  # the one metadata field TF Serving knows (get_model_metadata_impl.cc)
_STATES = get_model_status_pb2.ModelVersionStatus.State


def _set(names: Sequence[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


# -- predict --


def decode_inputs(
    inputs: Mapping[str, tensorproto.TensorProto], signature: SignatureSpec, limits: Limits
) -> dict[str, np.ndarray]:
    """A PredictRequest's inputs by signature alias, checked against the signature before any is decoded."""
    given, expected = list(inputs), list(signature.inputs)
    if len(given) != len(expected):
        # predict_util.cc PreProcessPrediction, word for word.
        sent_extra = [name for name in given if name not in signature.inputs]
        missing = [name for name in expected if name not in inputs]
        raise InvalidArgument(
            f"input size does not match signature: {len(given)}!={len(expected)} len({_set(given)}) != "
            f"len({_set(expected)}). Sent extra: {_set(sent_extra)}. Missing but required: {_set(missing)}."
        )
    for name in given:
        if name not in signature.inputs:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {name}. Inputs expected to be in the set {_set(expected)}."
            )
    arrays: dict[str, np.ndarray] = {}
    for name, proto in inputs.items():
        spec = signature.inputs[name]
        _check_dtype(proto, spec)
        arrays[name] = tensorproto.to_array(proto, f"input {name!r}", limits)
    return arrays


def _check_dtype(proto: tensorproto.TensorProto, spec: TensorSpec) -> None:
    if proto.dtype != tensorproto.dtype_enum(spec.dtype):
        raise InvalidArgument(
            f"input {spec.name!r} is {tensorproto.dtype_name(proto.dtype)}, but the signature expects "
            f"{spec.dtype.tf_name}"
        )


def check_output_filter(output_filter: Sequence[str], signature: SignatureSpec) -> list[str]:
    """The outputs a request wants, in its order (all of the signature's when it names none)."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        # predict_util.cc PreProcessPrediction.
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{_set(list(signature.outputs))}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def encode_outputs(
    outputs: Mapping[str, np.ndarray], wanted: Sequence[str], tensor_content: bool
) -> dict[str, tensorproto.TensorProto]:
    return {name: tensorproto.from_array(outputs[name], name, tensor_content) for name in wanted}


def model_spec(name: str, version: int, signature_name: str | None) -> model_pb2.ModelSpec:
    """The answer's ModelSpec: name, the version that answered and the signature (predict_util.cc MakeModelSpec)."""
    spec = model_pb2.ModelSpec(name=name, version=wrappers_pb2.Int64Value(value=version))
    if signature_name is not None:
        spec.signature_name = signature_name or DEFAULT_SIGNATURE
    return spec


def request_target(data: bytes, request_type: Any = predict_pb2.PredictRequest) -> model_pb2.ModelSpec:
    """The ModelSpec of a serialized PredictRequest, ClassificationRequest or RegressionRequest (field 1 in
    each), read without parsing the rest (``heads``)."""
    message_type = request_type.DESCRIPTOR.full_name
    head = heads.parse(heads.FirstFieldHead, data, message_type)
    spec = model_pb2.ModelSpec()
    for part in head.first:  # a sub-message sent in parts merges, as protobuf reads it
        try:
            spec.MergeFromString(part)
        except DecodeError as error:
            raise heads.not_valid(message_type, str(error)) from None
    return spec


def decode_predict(data: bytes, signature: SignatureSpec, limits: Limits) -> tuple[dict[str, np.ndarray], list[str]]:
    """A serialized PredictRequest's inputs and wanted outputs (a codec worker's job: parse and decode)."""
    request = heads.parse(predict_pb2.PredictRequest, data)
    wanted = check_output_filter(request.output_filter, signature)
    return decode_inputs(request.inputs, signature, limits), wanted


def predict_response(
    model_name: str,
    version: int,
    signature_name: str,
    outputs: Mapping[str, np.ndarray],
    wanted: Sequence[str],
    tensor_content: bool,
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse(model_spec=model_spec(model_name, version, signature_name))
    for alias, tensor in encode_outputs(outputs, wanted, tensor_content).items():
        response.outputs[alias].CopyFrom(tensor)
    return response


def encode_predict(
    model_name: str,
    version: int,
    signature_name: str,
    outputs: Mapping[str, np.ndarray],
    wanted: Sequence[str],
    tensor_content: bool,
) -> bytes:
    """``predict_response`` serialized (a codec worker's job: build and serialize)."""
    return bytes(
        predict_response(model_name, version, signature_name, outputs, wanted, tensor_content).SerializeToString()
    )


# -- classify and regress --

# The request message of each examples method (a signature's method_name).
EXAMPLE_REQUESTS: Mapping[str, Any] = {
    CLASSIFY_METHOD: classification_pb2.ClassificationRequest,
    REGRESS_METHOD: regression_pb2.RegressionRequest,
}


def decode_examples(data: bytes, signature: SignatureSpec, limits: Limits) -> tuple[dict[str, np.ndarray], str]:
    """A serialized ClassificationRequest or RegressionRequest (which one: the signature's method) as the
    signature's inputs, and that method (a codec worker's job: parse and serialize each example)."""
    request = heads.parse(EXAMPLE_REQUESTS[signature.method_name], data)
    return {tfserving.examples_input(signature): serialized_examples(request.input, limits)}, signature.method_name


def encode_examples(
    model_name: str, version: int, signature_name: str, outputs: Mapping[str, np.ndarray], method: str
) -> bytes:
    """A ClassificationResponse or RegressionResponse (by ``method``), serialized (a codec worker's job)."""
    spec = model_spec(model_name, version, signature_name)
    if method == CLASSIFY_METHOD:
        response: Any = classification_pb2.ClassificationResponse(
            model_spec=spec, result=classification_result(outputs)
        )
    else:
        response = regression_pb2.RegressionResponse(model_spec=spec, result=regression_result(outputs))
    return bytes(response.SerializeToString())


def first_task_model(data: bytes) -> str:
    """The model the first task of a serialized MultiInferenceRequest names ("" without tasks), read without
    parsing the rest (``heads``)."""
    message_type = inference_pb2.MultiInferenceRequest.DESCRIPTOR.full_name
    tasks = heads.parse(heads.FirstFieldHead, data, message_type).first
    if not tasks:
        return ""
    return str(heads.parse(inference_pb2.InferenceTask, tasks[0], message_type).model_spec.name)


def check_tasks(tasks: Sequence[inference_pb2.InferenceTask]) -> Sequence[inference_pb2.InferenceTask]:
    """multi_inference.cc's checks, with its texts: tasks present, one model, each signature once, known methods."""
    if not tasks:
        raise InvalidArgument("Tasks field is empty.")
    names: set[str] = set()
    for task in tasks:
        if not task.model_spec.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if task.model_spec.name != tasks[0].model_spec.name:
            raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        signature = task.model_spec.signature_name or "serving_default"
        if signature in names:
            raise InvalidArgument(f"Duplicate evaluation of signature: {signature}")
        names.add(signature)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
    return tasks


def decode_multi(data: bytes, limits: Limits) -> tuple[list[inference_pb2.InferenceTask], np.ndarray]:
    """A serialized MultiInferenceRequest's checked tasks and its examples, serialized (a codec worker's job)."""
    request = heads.parse(inference_pb2.MultiInferenceRequest, data)
    return list(check_tasks(request.tasks)), serialized_examples(request.input, limits)


def encode_inference_result(
    model_name: str, version: int, signature_name: str, outputs: Mapping[str, np.ndarray], method: str
) -> bytes:
    """One task's InferenceResult of a MultiInferenceResponse, serialized (a codec worker's job)."""
    result = inference_pb2.InferenceResult(model_spec=model_spec(model_name, version, signature_name))
    if method == CLASSIFY_METHOD:
        result.classification_result.CopyFrom(classification_result(outputs))
    else:
        result.regression_result.CopyFrom(regression_result(outputs))
    return bytes(result.SerializeToString())


def serialized_examples(request_input: input_pb2.Input, limits: Limits) -> np.ndarray:
    """The request's tf.Examples, serialized, as a 1-D object array of bytes for the signature's string input.

    With a context, each example is the context's bytes followed by its own: parsing the concatenation merges the
    two, the example's own features winning, which is what TF Serving does (and what REST's context amounts to).
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = request_input.example_list.examples
        context = b""
    elif kind == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
        context = request_input.example_list_with_context.context.SerializeToString()
    else:
        examples, context = (), b""
    if not examples:
        raise InvalidArgument("Input is empty.")  # input_util.cc InputToSerializedExampleTensor
    tfserving.check_example_count(len(examples), limits, "the input's example list")
    serialized = np.empty(len(examples), dtype=object)
    total = 0
    for i, example in enumerate(examples):
        serialized[i] = context + example.SerializeToString()
        total += len(serialized[i])
        tfserving.check_example_bytes(total, limits, "the input's examples")
    return serialized


def classification_result(outputs: Mapping[str, np.ndarray]) -> classification_pb2.ClassificationResult:
    found = tfserving.classifications(outputs)
    result = classification_pb2.ClassificationResult()
    for labels, scores in zip(found.labels, found.scores.tolist(), strict=True):
        row = result.classifications.add()
        for label, score in zip(labels, scores, strict=True):
            row.classes.add(label=label, score=score)
    return result


def regression_result(outputs: Mapping[str, np.ndarray]) -> regression_pb2.RegressionResult:
    values = tfserving.regression_values(outputs)
    return regression_pb2.RegressionResult(regressions=[regression_pb2.Regression(value=v) for v in values.tolist()])


# -- metadata and status --


def tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(
        name=spec.tensor_name,
        dtype=tensorproto.dtype_enum(spec.dtype),
        tensor_shape=tensorproto.tensor_shape(spec.shape),
    )


def signature_def(spec: SignatureSpec) -> meta_graph_pb2.SignatureDef:
    return meta_graph_pb2.SignatureDef(
        inputs={name: tensor_info(t) for name, t in spec.inputs.items()},
        outputs={name: tensor_info(t) for name, t in spec.outputs.items()},
        method_name=spec.method_name,
    )


def signature_def_map(signatures: Mapping[str, SignatureSpec]) -> get_model_metadata_pb2.SignatureDefMap:
    """The version's signatures as TF Serving's SignatureDefMap (the REST metadata document is its JSON form)."""
    return get_model_metadata_pb2.SignatureDefMap(
        signature_def={name: signature_def(spec) for name, spec in signatures.items()}
    )


def check_metadata_fields(fields: Sequence[str]) -> None:
    """get_model_metadata_impl.cc: at least one field, and only ``signature_def``."""
    if not fields:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {field} is not supported")


def metadata_response(
    name: str, version: int, signatures: Mapping[str, SignatureSpec]
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    packed = any_pb2.Any()
    packed.Pack(signature_def_map(signatures))
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(name, version, None))
    response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
    return response


def model_set_of(config_list: Any) -> ModelSet:
    """A ModelConfigList message as rtserve's model set: the model set's JSON shape is the proto's JSON mapping,
    field for field (service/model_set.py), so the message goes through its JSON form. InvalidArgument names the
    first problem."""
    document = json_format.MessageToDict(config_list, preserving_proto_field_name=True)
    try:
        return parse_model_set(document)
    except ValueError as error:
        raise InvalidArgument(f"model_config_list: {error}") from None


def state_number(state: str) -> int:
    """TF Serving's numeric state (START 10 ... END 50) for a state's name; UNKNOWN (0) for any other."""
    name = str(state)
    return int(_STATES.Value(name)) if name in _STATES.keys() else int(_STATES.UNKNOWN)  # noqa: SIM118


def status_proto(code: Code, message: str) -> status_pb2.StatusProto:
    return status_pb2.StatusProto(error_code=code.value, error_message=message)
