"""The Open Inference Protocol gRPC codec (service/codecs/v2_proto.py) and its private descriptor pool."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.codecs import v2_messages, v2_proto
from service.codecs.arrays import Limits
from service.codecs.v2_json import binary_blob
from service.errors import InvalidArgument
from service.tensors import DTYPES, SignatureSpec, TensorSpec, dtype_from_v2_name

LIMITS = Limits(10_000, 1_000)


def dtype(name: str) -> Any:
    found = dtype_from_v2_name(name)
    assert found is not None
    return found


def signature(datatype: str, shape: tuple[int, ...] | None = (-1,), outputs: tuple[str, ...] = ("y",)) -> SignatureSpec:
    spec = TensorSpec("x", dtype(datatype), shape)
    return SignatureSpec(
        "serving_default",
        "tensorflow/serving/predict",
        {"x": spec},
        {name: TensorSpec(name, dtype(datatype), shape) for name in outputs},
    )


def raw_request(array: np.ndarray, datatype: str, name: str = "x") -> Any:
    request = v2_messages.ModelInferRequest(model_name="m", id="r")
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(binary_blob(array, dtype(datatype)))
    return request


def typed_request(values: list[Any], field: str, datatype: str, shape: tuple[int, ...]) -> Any:
    request = v2_messages.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def sample(datatype: str, count: int = 6) -> np.ndarray:
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [b"", b"a", "é".encode(), b"\x00\xff", b"x" * 300, b"z"][:count]
        return array
    numpy = dtype(datatype).numpy
    if datatype == "BOOL":
        return np.array([True, False, True, True, False, False][:count])
    if np.issubdtype(numpy, np.integer):
        info = np.iinfo(numpy)
        return np.array([info.min, info.max, 0, 1, 7, info.max - 1][:count], dtype=numpy)
    return np.array([0.5, -1.25, 0.0, np.inf, -np.inf, 65504.0][:count], dtype=numpy)


ALL = [d.v2_name for d in DTYPES]
TYPED = [name for name in ALL if v2_proto.TYPED_FIELDS[name] is not None]


def test_every_rest_datatype_has_an_entry() -> None:
    assert set(v2_proto.TYPED_FIELDS) == set(ALL)


@pytest.mark.parametrize("datatype", ALL)
def test_raw_round_trip_every_datatype(datatype: str) -> None:
    array = sample(datatype).reshape(2, 3)
    decoded = v2_proto.decode_request(raw_request(array, datatype), signature(datatype, (-1, 3)), LIMITS)
    assert decoded.raw and decoded.id == "r"
    got = decoded.inputs["x"]
    assert got.shape == (2, 3) and got.dtype == array.dtype
    assert got.tolist() == array.tolist()
    response = v2_proto.encode_response("m", "1", "r", {"y": got}, {"y": dtype(datatype)}, request_raw=True)
    assert response.outputs[0].datatype == datatype and list(response.outputs[0].shape) == [2, 3]
    assert not response.outputs[0].contents.ListFields()
    assert response.raw_output_contents[0] == binary_blob(array, dtype(datatype))


@pytest.mark.parametrize("datatype", TYPED)
def test_typed_round_trip_every_typed_datatype(datatype: str) -> None:
    array = sample(datatype)
    field, _ = v2_proto.TYPED_FIELDS[datatype] or ("", None)
    request = typed_request(array.tolist(), field, datatype, (6,))
    decoded = v2_proto.decode_request(request, signature(datatype), LIMITS)
    assert not decoded.raw
    assert decoded.inputs["x"].dtype == dtype(datatype).numpy
    assert decoded.inputs["x"].tolist() == array.tolist()
    response = v2_proto.encode_response("m", "1", "", {"y": decoded.inputs["x"]}, {"y": dtype(datatype)}, False)
    assert not response.raw_output_contents
    assert list(getattr(response.outputs[0].contents, field)) == array.tolist()


def test_fp16_answers_raw_even_to_a_typed_request() -> None:
    outputs = {"y": np.array([1.0, 2.0], np.float32), "h": np.array([0.5], np.float16)}
    types = {"y": dtype("FP32"), "h": dtype("FP16")}
    response = v2_proto.encode_response("m", "1", "", outputs, types, request_raw=False)
    assert len(response.raw_output_contents) == 2  # all raw: the protocol forbids mixing
    assert np.frombuffer(response.raw_output_contents[1], "<f2").tolist() == [0.5]


def test_fp16_has_no_typed_field() -> None:
    request = typed_request([1.0], "fp32_contents", "FP16", (1,))
    with pytest.raises(InvalidArgument, match=r"input 'x' has datatype FP16, which has no typed contents field"):
        v2_proto.decode_request(request, signature("FP16"), LIMITS)


def test_bf16_is_an_unknown_datatype() -> None:
    request = raw_request(np.zeros(2, np.uint16), "UINT16")
    request.inputs[0].datatype = "BF16"
    with pytest.raises(InvalidArgument, match=r"input 'x' has unknown datatype 'BF16'"):
        v2_proto.decode_request(request, signature("FP16"), LIMITS)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.raw_input_contents.append(b"\x00" * 4), r"2 raw_input_contents entries for 1 inputs"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), r"input 'x' has typed contents but the request"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 7), r"input 'x' has shape \[2\] \(2 x 4 bytes\)"),
        (lambda r: setattr(r.inputs[0], "datatype", "INT32"), r"input 'x' has datatype INT32, the model expects FP32"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), r"input 'x' has an invalid shape"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 10**9), r"input 'x' has 1000000000 elements, more than"),
        (lambda r: setattr(r.inputs[0], "name", "z"), r"names unknown input 'z'"),
        (lambda r: r.outputs.add(name="nope"), r"names unknown output 'nope'"),
    ],
)
def test_bad_requests_name_the_problem(mutate: Any, message: str) -> None:
    request = raw_request(np.array([1.0, 2.0], np.float32), "FP32")
    mutate(request)
    with pytest.raises(InvalidArgument, match=message):
        v2_proto.decode_request(request, signature("FP32"), LIMITS)


def test_typed_count_and_field_mismatches() -> None:
    with pytest.raises(InvalidArgument, match=r"shape \[3\] \(3 elements\) but 2 values in fp32_contents"):
        v2_proto.decode_request(typed_request([1.0, 2.0], "fp32_contents", "FP32", (3,)), signature("FP32"), LIMITS)
    with pytest.raises(InvalidArgument, match=r"datatype FP32 but values in int_contents; FP32 values go in fp32"):
        v2_proto.decode_request(typed_request([1, 2], "int_contents", "FP32", (2,)), signature("FP32"), LIMITS)
    with pytest.raises(InvalidArgument, match=r"value 300 at position 1 is out of range for INT8 \[-128, 127\]"):
        v2_proto.decode_request(typed_request([1, 300], "int_contents", "INT8", (2,)), signature("INT8"), LIMITS)
    with pytest.raises(InvalidArgument, match=r"value 70000 at position 0 is out of range for UINT16"):
        v2_proto.decode_request(typed_request([70000], "uint_contents", "UINT16", (1,)), signature("UINT16"), LIMITS)


def test_raw_bytes_and_bool_checks_reuse_the_binary_extension() -> None:
    request = raw_request(sample("BYTES", 2), "BYTES")
    request.raw_input_contents[0] = b"\xff\xff\xff\x7f" + b"abc"  # a length prefix far beyond the data
    with pytest.raises(InvalidArgument, match=r"input 'x' binary BYTES element of 2147483647 bytes runs past"):
        v2_proto.decode_request(request, signature("BYTES"), LIMITS)
    request = raw_request(np.array([True, False]), "BOOL")
    request.raw_input_contents[0] = b"\x01\x02"
    with pytest.raises(InvalidArgument, match=r"BOOL bytes must be 0 or 1"):
        v2_proto.decode_request(request, signature("BOOL"), LIMITS)


def test_string_limit_is_checked_before_decoding() -> None:
    request = raw_request(sample("BYTES", 2), "BYTES")
    request.inputs[0].shape[0] = 2000  # RTSERVE_MAX_STRING_ELEMENTS (1000 here): refused on the shape alone
    with pytest.raises(InvalidArgument, match=r"input 'x' has 2000 elements, more than the limit of 1000"):
        v2_proto.decode_request(request, signature("BYTES"), LIMITS)


def test_parameters_of_every_kind_and_requested_outputs() -> None:
    request = raw_request(np.array([1.0], np.float32), "FP32")
    request.parameters["b"].bool_param = True
    request.parameters["i"].int64_param = -3
    request.parameters["s"].string_param = "text"
    request.parameters["d"].double_param = 2.5
    request.parameters["u"].uint64_param = 2**64 - 1
    request.parameters["empty"].CopyFrom(v2_messages.InferParameter())
    request.outputs.add(name="w")
    request.outputs.add(name="y")
    decoded = v2_proto.decode_request(request, signature("FP32", outputs=("y", "w")), LIMITS)
    assert decoded.parameters == {"b": True, "i": -3, "s": "text", "d": 2.5, "u": 2**64 - 1}
    assert decoded.requested_outputs == ["w", "y"]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([d for d in DTYPES if not d.is_string]).flatmap(
        lambda d: st.tuples(st.just(d), hnp.arrays(d.numpy, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
    ),
    st.booleans(),
)
def test_numeric_round_trips_match_numpy(case: Any, raw: bool) -> None:
    datatype, array = case
    name = datatype.v2_name
    if raw or v2_proto.TYPED_FIELDS[name] is None:
        request = raw_request(array, name)
    else:
        field, _ = v2_proto.TYPED_FIELDS[name] or ("", None)
        request = typed_request(array.ravel().tolist(), field, name, array.shape)
    sig = signature(name, None)
    decoded = v2_proto.decode_request(request, sig, Limits(10_000))
    np.testing.assert_array_equal(decoded.inputs["x"], array)
    response = v2_proto.encode_response("m", "1", "", {"y": decoded.inputs["x"]}, {"y": datatype}, decoded.raw)
    echoed = v2_messages.ModelInferRequest(raw_input_contents=response.raw_output_contents)
    tensor = echoed.inputs.add(name="x", datatype=name, shape=response.outputs[0].shape)
    tensor.contents.CopyFrom(response.outputs[0].contents)
    np.testing.assert_array_equal(v2_proto.decode_request(echoed, sig, Limits(10_000)).inputs["x"], array)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12), st.booleans())
def test_bytes_round_trips(items: list[bytes], raw: bool) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    request = raw_request(array, "BYTES") if raw else typed_request(items, "bytes_contents", "BYTES", (len(items),))
    decoded = v2_proto.decode_request(request, signature("BYTES"), LIMITS)
    assert decoded.inputs["x"].tolist() == items
    response = v2_proto.encode_response("m", "1", "", {"y": decoded.inputs["x"]}, {"y": dtype("BYTES")}, raw)
    if raw:
        assert response.raw_output_contents[0] == binary_blob(array, dtype("BYTES"))
    else:
        assert list(response.outputs[0].contents.bytes_contents) == items


def test_private_pool_lives_beside_tritonclient() -> None:
    """tritonclient registers its own inference.* in protobuf's default pool; ours never touches it."""
    from google.protobuf import descriptor_pool
    from tritonclient.grpc import service_pb2

    assert v2_messages.POOL is not descriptor_pool.Default()
    assert descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest") is (
        service_pb2.ModelInferRequest.DESCRIPTOR
    )
    ours = raw_request(np.array([1.0, 2.0], np.float32), "FP32")
    ours.parameters["priority"].uint64_param = 3
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.parameters["priority"].uint64_param == 3
    assert v2_messages.ModelInferRequest.FromString(theirs.SerializeToString()) == ours
    assert v2_messages.SERVICE.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in v2_messages.SERVICE.methods] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "RepositoryIndex",
    ]


def test_field_numbers_agree_with_tritons_proto() -> None:
    """Wire facts: every field we share with Triton's grpc_service.proto has its number and type."""
    from tritonclient.grpc import service_pb2

    def fields(descriptor: Any) -> dict[str, tuple[int, int]]:
        found = {f"{descriptor.full_name}.{f.name}": (f.number, f.type) for f in descriptor.fields}
        for nested in descriptor.nested_types:
            if not nested.GetOptions().map_entry:
                found |= fields(nested)
        return found

    for descriptor in v2_messages.FILE.message_types_by_name.values():
        theirs = fields(service_pb2.DESCRIPTOR.message_types_by_name[descriptor.name])
        ours = fields(descriptor)
        extra = set(ours) - set(theirs)
        assert extra <= {"inference.ModelMetadataResponse.properties"}  # the spec's, not in Triton's
        assert {k: ours[k] for k in ours.keys() - extra} == {k: theirs[k] for k in ours.keys() - extra}


def test_reflection_describes_the_service_from_the_private_pool() -> None:
    """What grpc-core's reflection needs: v2_messages.POOL holds the file, so grpc's reflection service, given that
    pool, describes GRPCInferenceService and its messages to a reflection client (grpcurl's way)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha import reflection
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    server = grpc.server(ThreadPoolExecutor(2))
    names = (v2_messages.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=v2_messages.POOL)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            assert v2_messages.SERVICE_NAME in list(database.get_services())
            service = DescriptorPool(database).FindServiceByName(v2_messages.SERVICE_NAME)
            assert [m.name for m in service.methods] == [m.name for m in v2_messages.SERVICE.methods]
            infer = service.methods_by_name["ModelStreamInfer"]
            assert infer.client_streaming and infer.server_streaming
            fields = {f.name: f.number for f in infer.input_type.fields}
            assert fields["raw_input_contents"] == 7
    finally:
        server.stop(None)
