"""What the OpenAPI document says about routes whose handlers read the raw request.

The handlers take a ``Request`` (or the fast lane's raw ASGI call), so FastAPI sees neither their path
parameters nor their bodies. These fragments, passed as ``openapi_extra``, declare them: path parameters for
every route, and the request bodies of the inference POSTs as the two protocols define them. They describe
what the server accepts; the handlers still check everything themselves.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import compile_path

from service.tensors import DTYPES

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "model_name": {"type": "string"},
    "version": {"type": "integer", "format": "int64", "minimum": 0},
    "label": {"type": "string"},
}

# -- TensorFlow Serving REST (tensorflow_serving/g3doc/api_rest.md) -------------------------------------------

_TF_PREDICT = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array", "description": "Row format: one entry per example"},
        "inputs": {"description": "Columnar format: a tensor, or an object of named tensors"},
    },
    "description": "Exactly one of 'instances' (row format) and 'inputs' (columnar format). Numbers may be "
    'NaN, Infinity or -Infinity; binary strings are {"b64": "..."} objects.',
}
_TF_EXAMPLES = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "context": {"type": "object", "description": "Features shared by every example"},
        "examples": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["examples"],
}

# -- Open Inference Protocol (../shared/specs/open_inference_rest.yaml, plus the binary tensor extension) ------

_V2_PARAMETERS = {"type": "object"}
_V2_INFER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": _V2_PARAMETERS,
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": sorted({dtype.v2_name for dtype in DTYPES})},
                    "parameters": _V2_PARAMETERS,
                    "data": {"type": "array", "description": "Flat or nested, in row-major order"},
                },
                "required": ["name", "shape", "datatype"],
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": _V2_PARAMETERS},
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
_V2_BINARY_HEADER = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Binary tensor extension: the body starts with a JSON header of this many bytes; inputs "
    "whose parameters give binary_data_size take their bytes from the rest, in order",
    "schema": {"type": "integer", "minimum": 0},
}


def path_parameters(path: str) -> dict[str, Any]:
    """``openapi_extra`` declaring the path parameters of a route template such as /v1/models/{model_name}."""
    names = compile_path(path)[2]
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _PARAMETER_SCHEMAS.get(name, {"type": "string"})}
            for name in names
        ]
    }


def _request_body(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": request},
        "responses": {
            "200": {"description": "The outputs", "content": answer},
            "4XX": {
                "description": "The request cannot be served; the message says why",
                "content": {JSON: {"schema": ERROR}},
            },
        },
    }


def tfserving_predict() -> dict[str, Any]:
    return _request_body({JSON: {"schema": _TF_PREDICT}}, {JSON: {"schema": {"type": "object"}}})


def tfserving_examples() -> dict[str, Any]:
    return _request_body({JSON: {"schema": _TF_EXAMPLES}}, {JSON: {"schema": {"type": "object"}}})


def v2_infer() -> dict[str, Any]:
    # With the binary extension both ways: a JSON header and raw tensor bytes in one octet-stream body.
    binary = {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}
    extra = _request_body({JSON: {"schema": _V2_INFER}, **binary}, {JSON: {"schema": {"type": "object"}}, **binary})
    return extra | {"parameters": [_V2_BINARY_HEADER]}
