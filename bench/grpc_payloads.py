"""gRPC request messages for N rows of the demo model, their framing on the wire, and the decoding of the answers.

* ``tfserving-grpc``: ``tensorflow.serving.PredictionService/Predict``, a ``PredictRequest`` (tensorflow-serving-api's
  messages) whose input is ``tf.make_tensor_proto(rows)`` (TensorFlow packs it in ``tensor_content``), as TF
  Serving's own example clients build it;
* ``v2-grpc``: ``inference.GRPCInferenceService/ModelInfer``, a ``ModelInferRequest`` (tritonclient's messages,
  wire-compatible with every V2 server) carrying the rows as ``raw_input_contents``, as tritonclient sends them.

A unary gRPC call on HTTP/2 is one POST to the method's path with ``content-type: application/grpc`` and
``te: trailers`` whose body is the message framed as 1 byte (0: not compressed), a big-endian uint32 length, then
the message; the answer's body is the same framing, and the call's status comes in the trailers. That is what
h2load replays (bench/loads.py); the answers are checked here with grpcio's own client.
"""

from __future__ import annotations

import struct
from typing import Any

import grpc
import numpy as np

from bench.payloads import INPUT_NAME, OUTPUT_NAME, Payload, rows

PROTOCOLS = ("tfserving-grpc", "v2-grpc")
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
METHODS = {"tfserving-grpc": PREDICT_METHOD, "v2-grpc": MODEL_INFER_METHOD}
HEADERS = {"content-type": "application/grpc", "te": "trailers"}
SIGNATURE = "serving_default"
PREFIX = struct.Struct(">BI")  # compressed flag, message length
CALL_TIMEOUT_S = 30.0


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message, uncompressed."""
    return PREFIX.pack(0, len(message)) + message


def unframe(body: bytes) -> bytes:
    """The one message of a framed unary body; ValueError when the framing is not exactly that."""
    if len(body) < PREFIX.size:
        raise ValueError(f"a gRPC frame has a {PREFIX.size}-byte prefix, got {len(body)} bytes")
    compressed, length = PREFIX.unpack_from(body)
    if compressed:
        raise ValueError("compressed gRPC frame")
    if len(body) != PREFIX.size + length:
        raise ValueError(f"gRPC frame says {length} bytes, carries {len(body) - PREFIX.size}")
    return body[PREFIX.size :]


def message(protocol: str, count: int, model: str) -> bytes:
    """The serialized request for ``count`` rows (bench.payloads.rows) to ``model``."""
    features = rows(count)
    if protocol == "tfserving-grpc":
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = model
        predict.model_spec.signature_name = SIGNATURE
        predict.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(features))
        return bytes(predict.SerializeToString())
    if protocol == "v2-grpc":
        return v2_infer(model, INPUT_NAME, OUTPUT_NAME, features)
    raise ValueError(f"unknown gRPC protocol {protocol!r}")


def v2_infer(model: str, input_name: str, output_name: str, values: np.ndarray) -> bytes:
    """A serialized ``ModelInferRequest``: one FP32 input as ``raw_input_contents``, ``output_name`` asked for."""
    from tritonclient.grpc import service_pb2

    infer = service_pb2.ModelInferRequest(model_name=model)
    tensor = infer.inputs.add(name=input_name, datatype="FP32")
    tensor.shape.extend(values.shape)
    infer.outputs.add(name=output_name)
    infer.raw_input_contents.append(values.astype("<f4").tobytes())
    return bytes(infer.SerializeToString())


def build(protocol: str, count: int, model: str) -> Payload:
    """The HTTP/2 request body (the framed message) and headers h2load sends."""
    return Payload(protocol, count, frame(message(protocol, count, model)), dict(HEADERS))


def decode(protocol: str, answer: bytes) -> np.ndarray:
    """The probabilities [N, 3] of a serialized answer; ValueError when it is malformed."""
    try:
        if protocol == "tfserving-grpc":
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2

            predicted = predict_pb2.PredictResponse.FromString(answer)
            return np.asarray(tf.make_ndarray(predicted.outputs[OUTPUT_NAME]), dtype=np.float32)
        if protocol == "v2-grpc":
            from tritonclient.grpc import service_pb2

            inferred = service_pb2.ModelInferResponse.FromString(answer)
            index = next(i for i, output in enumerate(inferred.outputs) if output.name == OUTPUT_NAME)
            output: Any = inferred.outputs[index]
            shape = [int(size) for size in output.shape]
            if inferred.raw_output_contents:  # raw answers: one entry per output, in output order
                return np.frombuffer(inferred.raw_output_contents[index], dtype="<f4").reshape(shape)
            return np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(shape)
    except (KeyError, StopIteration, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"unreadable {protocol} answer: {error}: {answer[:200]!r}") from error
    except Exception as error:  # protobuf's DecodeError has no common base with the above
        raise ValueError(f"undecodable {protocol} answer: {error}") from error
    raise ValueError(f"unknown gRPC protocol {protocol!r}")


def call(port: int, method: str, request: bytes, timeout_s: float = CALL_TIMEOUT_S) -> bytes:
    """One unary call with grpcio's client to 127.0.0.1:port, serialized in and out; grpc.RpcError on a bad status."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        answer: bytes = stub(request, timeout=timeout_s, wait_for_ready=True)
        return answer
