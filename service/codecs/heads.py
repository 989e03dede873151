"""The few fields of a large request message a front end needs before it can decode the rest: which model.

A 64 MiB message parsed whole takes the event loop for up to a second (the parser holds the GIL); its model
names which signature the codec worker decodes the rest against. So the front end parses a *head* first: a
message type that declares only the addressing fields under their real numbers, so protobuf's C parser skips
everything else (unknown fields, copied at memory speed) and keeps its own rules: the last of a repeated
scalar wins, the parts of a repeated sub-message merge, and bytes that are no message are an error.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from service.errors import InvalidArgument

_PACKAGE = "rtserve.heads"
_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _heads() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="rtserve_heads.proto", package=_PACKAGE, syntax="proto3")
    # Every occurrence of field 1, as bytes: the model_spec of tensorflow.serving's Predict, Classification and
    # RegressionRequest (the reader merges the parts, as protobuf does), the tasks of its MultiInferenceRequest.
    file.message_type.add(name="FirstFieldHead").field.add(name="first", number=1, type=_BYTES, label=_REPEATED)
    # inference.ModelInferRequest: model_name = 1, model_version = 2, id = 3 (a stream's error echoes them).
    infer = file.message_type.add(name="ModelInferRequestHead")
    for number, name in enumerate(("model_name", "model_version", "id"), start=1):
        infer.field.add(name=name, number=number, type=_STRING, label=_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        message.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{message.name}"))
        for message in file.message_type
    }


# Immutable vocabulary, like the message classes of the protocols: built once when the module is imported.
_HEADS = _heads()
FirstFieldHead = _HEADS["FirstFieldHead"]
ModelInferRequestHead = _HEADS["ModelInferRequestHead"]


def not_valid(message_type: str, reason: str) -> InvalidArgument:
    """The refusal of bytes that do not parse as the request's message (grpcio would end the call UNKNOWN)."""
    return InvalidArgument(f"the request is not a valid {message_type}: {reason}")


def parse(message_class: Any, data: bytes, message_type: str = "") -> Any:
    """``message_class.FromString(data)``; bytes that are not such a message are an InvalidArgument naming
    ``message_type`` (default: the class's own message type)."""
    try:
        return message_class.FromString(data)
    except DecodeError as error:
        raise not_valid(message_type or message_class.DESCRIPTOR.full_name, str(error)) from None


def check(message_class: Any, data: bytes) -> None:
    """Raise ``parse``'s InvalidArgument when ``data`` is no such message (a codec worker's job when large)."""
    parse(message_class, data)


def field_bytes(number: int, data: bytes) -> bytes:
    """``data`` as the length-delimited field ``number`` of an enclosing message (a sub-message already
    serialized, wrapped without parsing it again)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
