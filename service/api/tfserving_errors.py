"""TF Serving's words for the data plane's structured errors, for both of rtserve's TF Serving front ends.

TF Serving clients match its error texts (and codes), so the TF Serving REST and gRPC APIs answer in them, whatever
command started the server; the V2 APIs keep rtserve's own messages (each structured error's ``message``).

Names from the request are cut short (``arrays.echo``: 80 characters and "..."), as everywhere in rtserve. The
rule where rtserve knows more than TF Serving says: TF Serving's text is kept as it is, and nothing is appended
to it (a client comparing a whole message still matches). Where TF Serving's text quotes the request's own JSON
(json_tensor.cc ``JSON Value: <the body> ...``), rtserve leaves the quoted body out and keeps the fixed words a
client can match: a request's data stays out of error bodies.
"""

from __future__ import annotations

from typing import Literal

from service.codecs.arrays import echo
from service.codecs.json_io import MalformedJson
from service.codecs.lookup import UnknownSignature
from service.dataplane import LabelNotFound, ModelNotServed, StatusNotFound, Target, VersionNotAvailable
from service.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError
from service.tensors import CLASSIFY_METHOD, REGRESS_METHOD

Front = Literal["grpc", "rest"]


def servable_request(target: Target, version: int | None) -> str:
    """How TF Serving prints a ServableRequest (core/manager.h): Latest(m) or Specific(m, 3)."""
    if version is None:
        return f"Latest({echo(target.model)})"
    return f"Specific({echo(target.model)}, {version})"


def tf_serving_error(error: ServingError, front: Front) -> ServingError:
    """The error TF Serving reports for the same failure on that front end, with its code and text."""
    if isinstance(error, LabelNotFound) or (isinstance(error, ModelNotServed) and error.target.label is not None):
        # server_core.cc GetModelVersionForLabel; INVALID_ARGUMENT there (HTTP 400).
        return InvalidArgument(f"Unrecognized servable version label: {echo(error.target.label or '')}")
    if isinstance(error, ModelNotServed):
        # core/basic_manager.cc GetUntypedServableHandle; REST the same (HTTP 404, g3doc/api_rest.md's example).
        return NotFound(f"Servable not found for request: {servable_request(error.target, error.target.version)}")
    if isinstance(error, VersionNotAvailable):
        return NotFound(f"Servable not found for request: {servable_request(error.target, error.version)}")
    if isinstance(error, StatusNotFound):
        # get_model_status_impl.cc GetModelStatusWithModelSpec; REST calls the same code.
        if error.target.version is None:
            return NotFound(f"Could not find any versions of model {echo(error.target.model)}")
        return NotFound(f"Could not find version {error.target.version} of model {echo(error.target.model)}")
    if isinstance(error, UnknownSignature):
        return _unknown_signature(error, front)
    if isinstance(error, MalformedJson) and front == "rest":
        return InvalidArgument(json_parse_error(error))
    return error


def _unknown_signature(error: UnknownSignature, front: Front) -> ServingError:
    if error.method in (CLASSIFY_METHOD, REGRESS_METHOD):
        # servables/tensorflow/classifier.cc GetClassificationSignature, regressor.cc GetRegressionSignature.
        return InvalidArgument(f"No signature was found with the name: {echo(error.key)}")
    if front == "rest":
        # http_rest_api_handler.cc GetInfoMap: REST looks the signature up itself, before predict_util.cc does.
        return InvalidArgument(f'Serving signature name: "{echo(error.key)}" not found in signature def')
    return FailedPrecondition(f'Serving signature key "{echo(error.key)}" not found.')  # predict_util.cc


def json_parse_error(error: MalformedJson) -> str:
    """util/json_tensor.cc ParseJson: ``JSON Parse error: <reason> at offset: <n>`` (the reason is orjson's, where
    TF Serving's is rapidjson's; a client matches the leading words)."""
    if error.empty:
        return "JSON Parse error: The document is empty"
    if error.offset is None:
        return f"JSON Parse error: {error.reason}"
    return f"JSON Parse error: {error.reason} at offset: {error.offset}"
