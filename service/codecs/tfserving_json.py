"""TensorFlow Serving REST JSON: predict (row and columnar), classify and regress, errors.

Follows tensorflow_serving/util/json_tensor.cc. Where this module deliberately differs, the docstring of the
function says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs import tfexample, tfserving
from service.codecs.arrays import (
    Limits,
    as_limits,
    check_names,
    decode_b64,
    echo,
    is_b64_object,
    quote,
    stack,
    to_array,
    to_json_value,
)
from service.codecs.json_io import dumps, json_type, parse_object
from service.errors import Internal, InvalidArgument
from service.tensors import DEFAULT_SIGNATURE, SignatureSpec

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class PredictRequest:
    signature_name: str
    inputs: dict[str, np.ndarray]
    columnar: bool  # the request used "inputs", so the response uses "outputs"


@dataclass(frozen=True, slots=True)
class ExamplesRequest:
    """A classify or regress request: one serialized tf.Example per example (1-D object array of bytes)."""

    signature_name: str
    examples: np.ndarray


# -- predict --


def decode_predict(
    body: bytes, signature_for: Callable[[str], SignatureSpec], max_elements: int | Limits
) -> PredictRequest:
    """Parse ``{"signature_name"?, "instances": [...]}`` (row) or ``{"signature_name"?, "inputs": ...}``.

    Names are checked here (so messages can point into the body); shapes against the signature are the data
    plane's (``arrays.check_shape``). Unlike TF Serving, a columnar object naming inputs the signature lacks
    is refused rather than silently ignored.
    """
    document = parse_object(body, as_limits(max_elements).json_values)
    has_rows, has_columns = "instances" in document, "inputs" in document
    # json_tensor.cc FillPredictRequestFromJson's words (without the body it quotes before the first).
    if has_rows and has_columns:
        raise InvalidArgument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if not has_rows and not has_columns:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    signature = signature_for(_signature_name(document))
    if has_rows:
        inputs = _decode_rows(document["instances"], signature, max_elements)
    else:
        inputs = _decode_columns(document["inputs"], signature, max_elements)
    return PredictRequest(signature.name, inputs, columnar=has_columns)


def _signature_name(document: Mapping[str, Any]) -> str:
    name = document.get("signature_name")
    if name is None:
        return DEFAULT_SIGNATURE
    if not isinstance(name, str):
        raise InvalidArgument(f"'signature_name' must be a string, got {json_type(name)}")
    return name or DEFAULT_SIGNATURE  # TF Serving reads "" as the default too


def _is_named(value: object) -> bool:
    """An object of named inputs (a {"b64": ...} object is a value, not a name map)."""
    return isinstance(value, dict) and not is_b64_object(value)


def _owner(signature: SignatureSpec) -> str:
    return f"signature {quote(signature.name)}"


def _decode_rows(instances: object, signature: SignatureSpec, max_elements: int | Limits) -> dict[str, np.ndarray]:
    """Row format: a list of instances stacked along a new batch axis."""
    if not isinstance(instances, list):
        raise InvalidArgument("Excepting 'instances' to be an list/array")  # json_tensor.cc, its spelling
    if not instances:
        raise InvalidArgument("No values in 'instances' array")  # json_tensor.cc
    specs = signature.inputs
    if _is_named(instances[0]):
        for i, instance in enumerate(instances):
            if not _is_named(instance):
                raise InvalidArgument(f"instances[{i}] is not an object naming inputs, but instances[0] is")
            _check_instance_names(i, instance, signature)
        return {
            name: stack(
                [instance[name] for instance in instances],
                spec.dtype,
                "instances",
                _instance_key(name),
                max_elements,
            )
            for name, spec in specs.items()
        }
    if len(specs) != 1:
        raise InvalidArgument(
            f"instances[0] is a bare value, but {_owner(signature)} has {len(specs)} inputs; "
            "each instance must be an object naming them"
        )
    # A later object among bare values is caught by the conversion ("expected ..., got an object").
    ((name, spec),) = specs.items()
    return {name: stack(instances, spec.dtype, "instances", lambda i: f"instances[{i}]", max_elements)}


def _check_instance_names(i: int, instance: Mapping[str, object], signature: SignatureSpec) -> None:
    """json_tensor.cc FillTensorMapFromInstancesList's words: an unknown key first, then the keys' set (sorted,
    as its std::set; the object it quotes is left out)."""
    for name in instance:
        if name not in signature.inputs:
            raise InvalidArgument(
                f"Failed to process element: {i} key: {echo(name)} of 'instances' list. Error: INVALID_ARGUMENT: "
                f"JSON object: does not have named input: {echo(name)}"
            )
    if len(instance) != len(signature.inputs):
        raise InvalidArgument(
            f"Failed to process element: {i} of 'instances' list. JSON object keys must be equal to: "
            + ",".join(sorted(signature.inputs))
        )


def _instance_key(name: str) -> Callable[[int], str]:
    return lambda i: f"instances[{i}][{quote(name)}]"


def _decode_columns(value: object, signature: SignatureSpec, max_elements: int | Limits) -> dict[str, np.ndarray]:
    """Columnar format: whole tensors, a bare value for a one-input signature or an object naming them."""
    specs = signature.inputs
    if _is_named(value):
        assert isinstance(value, dict)
        for name in specs:
            if name not in value:  # json_tensor.cc FillTensorMapFromInputsMap
                raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        # TF Serving ignores names the signature lacks; refused here, in rtserve's words.
        check_names(value.keys(), specs.keys(), kind="input", where="'inputs'", owner=_owner(signature))
        return {
            name: to_array(value[name], spec.dtype, f"inputs[{quote(name)}]", max_elements)
            for name, spec in specs.items()
        }
    if len(specs) != 1:
        raise InvalidArgument(
            f"'inputs' is a bare value, but {_owner(signature)} has {len(specs)} inputs; send an object naming them"
        )
    ((name, spec),) = specs.items()
    return {name: to_array(value, spec.dtype, "inputs", max_elements)}


def encode_predict(outputs: Mapping[str, np.ndarray], columnar: bool) -> bytes:
    """``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar), one output bare, several by name.

    Row format needs every output batched alike; as TF Serving does, a scalar output or outputs disagreeing
    on the first dimension are an error (the columnar format can carry them).
    """
    if not outputs:
        raise Internal("the signature produced no outputs")
    values = {name: to_json_value(array, name) for name, array in outputs.items()}
    if columnar:
        return dumps({"outputs": _single_or_named(values)})
    batch = _batch_size(outputs)
    if len(values) == 1:
        return dumps({"predictions": _single_or_named(values)})
    rows = [{name: value[i] for name, value in values.items()} for i in range(batch)]
    return dumps({"predictions": rows})


def _single_or_named(values: dict[str, Any]) -> Any:
    return next(iter(values.values())) if len(values) == 1 else values


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    first_name, first = next(iter(outputs.items()))
    for name, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(
                f"output {quote(name)} is a scalar, which the row format cannot split into instances; "
                "use the columnar format ('inputs')"
            )
        if array.shape[0] != first.shape[0]:
            raise InvalidArgument(
                f"outputs {quote(first_name)} and {quote(name)} disagree on the batch size "
                f"({first.shape[0]} vs {array.shape[0]}), which the row format needs; "
                "use the columnar format ('inputs')"
            )
    return int(first.shape[0])


# -- classify and regress --


def decode_examples(body: bytes, max_elements: int | Limits) -> ExamplesRequest:
    """Parse ``{"signature_name"?, "context"?, "examples": [{feature: value}, ...]}`` into tf.Examples.

    A feature value is a number, a string, a ``{"b64": ...}`` object or a list of them: integers (and
    booleans, as 1/0) make an int64_list, any float makes a float_list, strings make a bytes_list. Context
    features are merged into every example, the example's own value winning, which is what TF Serving's
    concatenation of the serialized context and example amounts to. TF Serving refuses a list mixing floats
    with integers; this accepts it as floats.

    Limits count what the model will parse: every example's features (an empty one too) and values, the
    context's counted once per example; the examples as string elements; and the serialized bytes, of which
    the context's are copied into every example.
    """
    limits = as_limits(max_elements)
    document = parse_object(body, limits.json_values)
    signature_name = _signature_name(document)
    if "examples" not in document:
        # json_tensor.cc FillClassifyRegressRequestFromJson, word for word ("classify" for regress too).
        raise InvalidArgument("When method is classify, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise InvalidArgument("Expecting 'examples' value to be an list/array")  # json_tensor.cc
    tfserving.check_example_count(len(examples), limits)
    context, context_cost = b"", 0
    if "context" in document:
        context, context_cost = _serialized_features(document["context"], "context")
    serialized = np.empty(len(examples), dtype=object)
    total = total_bytes = 0
    for i, raw in enumerate(examples):
        own, own_cost = _serialized_features(raw, f"examples[{i}]")
        total += context_cost + own_cost
        if total > limits.elements:
            raise InvalidArgument(
                f"'examples' hold more than the limit of {limits.elements} features and feature values "
                "(the context counts in every example)"
            )
        serialized[i] = tfexample.example(context + own)
        total_bytes += len(serialized[i])
        tfserving.check_example_bytes(total_bytes, limits)
    return ExamplesRequest(signature_name, serialized)


def _serialized_features(value: object, where: str) -> tuple[bytes, int]:
    """One example object's Features map entries, serialized, and their cost (features plus values)."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object of features, got {json_type(value)}")
    parts: list[bytes] = []
    cost = 0
    for name, content in value.items():
        at = f"{where}[{quote(name)}]"
        kind, values = _feature(content, at)
        parts.append(tfexample.feature_entry(_feature_text(name, at), kind, values))
        cost += 1 + len(values)
    return b"".join(parts), cost


def _feature(content: object, where: str) -> tuple[str, list[object]]:
    items = content if isinstance(content, list) else [content]
    values: list[object] = []
    has_bytes = has_float = has_int = False
    for j, item in enumerate(items):
        at = f"{where}[{j}]" if isinstance(content, list) else where
        if isinstance(item, str):
            values.append(_feature_text(item, at))
            has_bytes = True
        elif is_b64_object(item):
            assert isinstance(item, dict)
            values.append(_feature_b64(item["b64"], at))
            has_bytes = True
        elif isinstance(item, bool):
            values.append(int(item))
            has_int = True
        elif isinstance(item, int):
            if not _INT64_MIN <= item <= _INT64_MAX:
                raise InvalidArgument(f"{at}: {item} is out of range for an int64 feature")
            values.append(item)
            has_int = True
        elif isinstance(item, float):
            if math.isfinite(item) and abs(item) > _FLOAT32_MAX:
                raise InvalidArgument(f"{at}: {item!r} is out of range for a float feature")
            values.append(item)
            has_float = True
        else:
            raise InvalidArgument(
                f'{at} is {json_type(item)}; a feature value is a number, a string, a {{"b64": ...}} object '
                "or a list of them"
            )
    if has_bytes and (has_float or has_int):
        raise InvalidArgument(f"{where} mixes strings and numbers")
    kind = "bytes_list" if has_bytes else "float_list" if has_float else "int64_list" if has_int else "empty"
    return kind, values


def _feature_text(text: str, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape, possible through the stdlib parser
        raise InvalidArgument(f"{where} is not valid Unicode text") from None


def _feature_b64(text: str, where: str) -> bytes:
    try:
        return decode_b64(text)
    except ValueError:
        raise InvalidArgument(f'{where}: invalid base64 in {{"b64": ...}}') from None


def encode_classify(classes: np.ndarray | None, scores: np.ndarray | None) -> bytes:
    """``{"results": [[[label, score], ...], ...]}``: one list of (label, score) pairs per example.

    TF Serving's key is "results" (its REST guide says "result"; its code and clients use "results"). The
    outputs are read as ``tfserving.classifications`` reads them for every protocol.
    """
    named = {name: array for name, array in (("classes", classes), ("scores", scores)) if array is not None}
    found = tfserving.classifications(named)
    values = to_json_value(found.scores)
    width = found.scores.shape[1]
    results = [[[found.labels[i][j], values[i][j]] for j in range(width)] for i in range(len(found.labels))]
    return dumps({"results": results})


def encode_classify_outputs(outputs: Mapping[str, np.ndarray]) -> bytes:
    """The classify answer from a classification signature's outputs (``classes`` and/or ``scores``)."""
    return encode_classify(outputs.get("classes"), outputs.get("scores"))


def encode_regress_outputs(outputs: Mapping[str, np.ndarray]) -> bytes:
    """The regress answer from a regression signature's outputs (``outputs``)."""
    return dumps({"results": to_json_value(tfserving.regression_values(outputs))})


def encode_regress(values: np.ndarray) -> bytes:
    """``{"results": [value, ...]}`` from an output of shape [batch_size] or [batch_size, 1], as float32."""
    return dumps({"results": to_json_value(tfserving.regression_vector(values))})
