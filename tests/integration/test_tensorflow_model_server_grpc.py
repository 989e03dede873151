"""`tensorflow_model_server` over gRPC, started exactly as TF Serving is started (`--port`, `--rest_api_port`,
`--model_name`, `--model_base_path`, free loopback ports), asked with tensorflow-serving-api's own stubs and
``tf.make_tensor_proto``: half_plus_two (x/2 + 2) in both flavours, model config reload by RPC and by file, the
unix socket, channel arguments, and TLS (a CA, server and client certificates made here with ``cryptography``)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from apptools import (
    ServerProcess,
    free_port,
    rtserve_command,
    running_server,
    tf_serving_base,
    tf_serving_config_file,
    tf_serving_env,
    tf_serving_one_model,
    tf_serving_polled_config,
    wait_until,
)
from modelfactory import example, half_plus_two_tf2

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0
VERSION = "00000123"  # TF Serving's tutorial layout: version 123
STATES = get_model_status_pb2.ModelVersionStatus


def base_path(root: Path, name: str, saved_model: Path) -> Path:
    return tf_serving_base(root, name, saved_model, VERSION)


def command(grpc_port: int, rest_port: int, base: Path, *extra: str) -> list[str]:
    return tf_serving_one_model(rest_port, grpc_port, base, *extra)


def predict(stub: prediction_service_pb2_grpc.PredictionServiceStub, x: Any, model: str = "half_plus_two") -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, dtype=np.float32)))
    return stub.Predict(request, timeout=TIMEOUT_S)


def status(models: model_service_pb2_grpc.ModelServiceStub, name: str) -> dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    return {s.version: s.state for s in models.GetModelStatus(request, timeout=TIMEOUT_S).model_version_status}


def status_or_none(models: model_service_pb2_grpc.ModelServiceStub, name: str) -> dict[int, int] | None:
    try:
        return status(models, name)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return None


def reload_request(**bases: Path) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base in bases.items():
        request.config.model_config_list.config.add(name=name, base_path=str(base), model_platform="tensorflow")
    return request


def examples(*xs: float) -> list[example_pb2.Example]:
    return [example_pb2.Example.FromString(example(x=x)) for x in xs]


@pytest.fixture(scope="module")
def half_plus_two_tf2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One flavour, for what does not depend on it (config reloads, channel arguments, TLS)."""
    return half_plus_two_tf2(tmp_path_factory.mktemp("half_plus_two_tf2") / "1")


# -- half_plus_two as TF Serving serves it ----------------------------------------------------------------------


@dataclass
class Served:
    server: ServerProcess
    flavour: str
    base: Path
    socket_path: Path


@pytest.fixture(scope="module")
def served(half_plus_two_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("tfs-grpc")
    base = base_path(root, "half_plus_two", half_plus_two_dir)
    socket_path = root / "tfs.sock"
    grpc_port, rest_port = free_port(), free_port()
    line = command(grpc_port, rest_port, base, f"--grpc_socket_path={socket_path}")
    with running_server(tf_serving_env(root, grpc_port), root, command=line, port=rest_port) as server:
        yield Served(server, half_plus_two_dir.parent.name.removeprefix("half_plus_two_"), base, socket_path)


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.server.grpc_target) as chan:
        yield chan


def column(served: Served, *xs: float) -> Any:
    """x as each flavour's signature takes it: [-1] in TF2, [-1, 1] in TF1 (TF Serving's original graph)."""
    values = np.asarray(xs, dtype=np.float32)
    return values if served.flavour == "tf2" else values.reshape(-1, 1)


def test_predict_is_x_half_plus_two(served: Served, channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    answer = predict(stub, column(served, 1.0, 2.0, 5.0))
    assert tf.make_ndarray(answer.outputs["y"]).ravel().tolist() == [2.5, 3.0, 4.5]
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0, 4.5], "typed values, as TF Serving answers"
    assert answer.model_spec.name == "half_plus_two"
    assert answer.model_spec.version.value == 123
    assert answer.model_spec.signature_name == "serving_default"


def test_classify_and_regress_examples(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.extend(examples(20.0))
    classes = stub.Classify(classify, timeout=TIMEOUT_S)
    (only,) = classes.result.classifications
    assert [(c.label, c.score) for c in only.classes] == [("", 12.0)]
    assert classes.model_spec.version.value == 123

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.extend(examples(80.0, 1.0))
    assert [r.value for r in stub.Regress(regress, timeout=TIMEOUT_S).result.regressions] == [42.0, 2.5]


def test_model_metadata_and_status(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(request, timeout=TIMEOUT_S)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert signatures.signature_def["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert metadata.model_spec.version.value == 123

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request_status = get_model_status_pb2.GetModelStatusRequest()
    request_status.model_spec.name = "half_plus_two"
    (version,) = models.GetModelStatus(request_status, timeout=TIMEOUT_S).model_version_status
    assert (version.version, version.state) == (123, STATES.AVAILABLE)
    assert (version.status.error_code, version.status.error_message) == (0, "")


def test_the_unix_socket_serves_predict(served: Served) -> None:
    with grpc.insecure_channel(f"unix:{served.socket_path}") as chan:
        answer = predict(prediction_service_pb2_grpc.PredictionServiceStub(chan), column(served, 4.0))
    assert tf.make_ndarray(answer.outputs["y"]).ravel().tolist() == [4.0]


def test_reload_config_request_adds_a_model(served: Served, channel: grpc.Channel, half_plus_two_dir: Path) -> None:
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    second = base_path(served.base.parent.parent / "more", "second", half_plus_two_dir)
    try:
        reply = models.HandleReloadConfigRequest(
            reload_request(half_plus_two=served.base, second=second), timeout=TIMEOUT_S
        )
        assert (reply.status.error_code, reply.status.error_message) == (0, "")
        wait_until(lambda: status_or_none(models, "second") == {123: STATES.AVAILABLE}, 60, 0.2, "second AVAILABLE")
        answer = predict(stub, column(served, 6.0), model="second")
        assert tf.make_ndarray(answer.outputs["y"]).ravel().tolist() == [5.0]
        assert status(models, "half_plus_two") == {123: STATES.AVAILABLE}, "the model kept serves on"
    finally:  # the module's server serves half_plus_two alone again
        models.HandleReloadConfigRequest(reload_request(half_plus_two=served.base), timeout=TIMEOUT_S)
    wait_until(lambda: status_or_none(models, "second") is None, 60, 0.2, "second dropped")


# -- the model config file, seen over gRPC ----------------------------------------------------------------------


def test_config_file_changes_and_the_file_winning_over_reload_config(
    half_plus_two_tf2_dir: Path, tmp_path: Path
) -> None:
    """The file's changes show in GetModelStatus; a set pushed by HandleReloadConfigRequest is replaced by the
    file's at its next poll, as TF Serving's poll thread does (it reloads the file at every poll)."""
    a, b, c = (base_path(tmp_path, name, half_plus_two_tf2_dir) for name in "abc")
    models_file = tf_serving_config_file(tmp_path / "models.config", a=a)
    grpc_port, rest_port = free_port(), free_port()
    line = tf_serving_polled_config(rest_port, grpc_port, models_file)
    with (
        running_server(tf_serving_env(tmp_path, grpc_port), tmp_path, command=line, port=rest_port) as server,
        grpc.insecure_channel(server.grpc_target) as chan,
    ):
        models = model_service_pb2_grpc.ModelServiceStub(chan)
        assert status(models, "a") == {123: STATES.AVAILABLE}
        tf_serving_config_file(models_file, a=a, b=b)
        wait_until(lambda: status_or_none(models, "b") == {123: STATES.AVAILABLE}, 60, 0.2, "b added by the file")

        reply = models.HandleReloadConfigRequest(reload_request(a=a, b=b, c=c), timeout=TIMEOUT_S)
        assert reply.status.error_code == 0
        assert "model set applied: a, b, c" in server.log()
        # The RPC's set (with c) serves until the file's next poll applies the unchanged file again (without c).
        wait_until(lambda: "model config file applied again" in server.log(), 30, 0.1, "the file applied again")
        wait_until(lambda: status_or_none(models, "c") is None, 30, 0.1, "c dropped by the file's set")
        assert status(models, "a") == {123: STATES.AVAILABLE}
        assert status(models, "b") == {123: STATES.AVAILABLE}


# -- channel arguments ------------------------------------------------------------------------------------------


def test_channel_arguments_reach_the_server(half_plus_two_tf2_dir: Path, tmp_path: Path) -> None:
    """--grpc_channel_arguments as TF Serving's help shows it: a maximum connection age of a second replaces
    rtserve's own five minutes, so the connection is closed (GOAWAY) and replaced soon after a call."""
    base = base_path(tmp_path, "half_plus_two", half_plus_two_tf2_dir)
    grpc_port, rest_port = free_port(), free_port()
    arguments = "--grpc_channel_arguments=grpc.max_connection_age_ms=1000,grpc.max_connection_age_grace_ms=1000"
    line = command(grpc_port, rest_port, base, arguments)
    with (
        running_server(tf_serving_env(tmp_path, grpc_port), tmp_path, command=line, port=rest_port) as server,
        grpc.insecure_channel(server.grpc_target) as chan,
    ):
        models = model_service_pb2_grpc.ModelServiceStub(chan)
        assert status(models, "half_plus_two") == {123: STATES.AVAILABLE}
        states: list[grpc.ChannelConnectivity] = []
        chan.subscribe(states.append)
        try:
            wait_until(lambda: grpc.ChannelConnectivity.IDLE in states, 10, 0.05, "the connection to be aged out")
        finally:
            chan.unsubscribe(states.append)
        assert status(models, "half_plus_two") == {123: STATES.AVAILABLE}, "the next call opens a new connection"


# -- TLS ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM texts: a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, all signed by it."""

    ca: bytes
    server_key: bytes
    server_cert: bytes
    client_key: bytes
    client_cert: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, **kind: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=kind.get("ca", False), path_length=None), critical=True)
    )
    if "names" in kind:
        builder = builder.add_extension(x509.SubjectAlternativeName(kind["names"]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtserve test CA")])
    ca = _certificate("rtserve test CA", ca_key, ca_name, ca_key, ca=True)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _certificate("localhost", server_key, ca_name, ca_key, names=names)
    client = _certificate("a client", client_key, ca_name, ca_key)
    pem = serialization.Encoding.PEM
    return Pki(
        ca.public_bytes(pem), _pem(server_key), server.public_bytes(pem), _pem(client_key), client.public_bytes(pem)
    )


def ssl_config(path: Path, pki: Pki, client_verify: bool) -> Path:
    """TF Serving's SSLConfig text proto: the PEM texts themselves, not file names."""

    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    verify = "true" if client_verify else "false"
    path.write_text(
        f"server_key: {quoted(pki.server_key)}\nserver_cert: {quoted(pki.server_cert)}\n"
        f"custom_ca: {quoted(pki.ca)}\nclient_verify: {verify}\n"
    )
    return path


@dataclass
class TlsServer:
    target: str
    socket_path: Path


@pytest.fixture(scope="module", params=[False, True], ids=["tls", "mutual-tls"])
def tls_server(
    request: pytest.FixtureRequest, pki: Pki, half_plus_two_tf2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TlsServer, bool]]:
    client_verify = bool(request.param)
    root = tmp_path_factory.mktemp("tls")
    base = base_path(root, "half_plus_two", half_plus_two_tf2_dir)
    socket_path = root / "tls.sock"
    grpc_port, rest_port = free_port(), free_port()
    line = command(
        grpc_port,
        rest_port,
        base,
        f"--ssl_config_file={ssl_config(root / 'ssl.config', pki, client_verify)}",
        f"--grpc_socket_path={socket_path}",
    )
    with running_server(tf_serving_env(root, grpc_port), root, command=line, port=rest_port) as server:
        assert "TLS" in server.log()
        yield TlsServer(server.grpc_target, socket_path), client_verify


def tls_status(target: str, credentials: grpc.ChannelCredentials, **options: Any) -> dict[int, int]:
    with grpc.secure_channel(target, credentials, options=list(options.items())) as chan:
        return status(model_service_pb2_grpc.ModelServiceStub(chan), "half_plus_two")


def refused_code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()  # type: ignore[no-any-return]


def test_tls_with_the_servers_ca_is_served(tls_server: tuple[TlsServer, bool], pki: Pki) -> None:
    server, _ = tls_server
    with_cert = grpc.ssl_channel_credentials(pki.ca, pki.client_key, pki.client_cert)
    assert tls_status(server.target, with_cert) == {123: STATES.AVAILABLE}
    # The unix socket has the same credentials, as in TF Serving; its target names no host, so the client says
    # which name the certificate is checked against.
    on_socket = tls_status(f"unix:{server.socket_path}", with_cert, **{"grpc.ssl_target_name_override": "localhost"})
    assert on_socket == {123: STATES.AVAILABLE}
    with grpc.insecure_channel(f"unix:{server.socket_path}") as chan:
        models = model_service_pb2_grpc.ModelServiceStub(chan)
        assert refused_code(lambda: status(models, "half_plus_two")) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused_on_a_tls_port(tls_server: tuple[TlsServer, bool]) -> None:
    server, _ = tls_server
    with grpc.insecure_channel(server.target) as chan:
        models = model_service_pb2_grpc.ModelServiceStub(chan)
        assert refused_code(lambda: status(models, "half_plus_two")) == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_a_certificate_only_when_client_verify_is_off(
    tls_server: tuple[TlsServer, bool], pki: Pki
) -> None:
    server, client_verify = tls_server
    without_cert = grpc.ssl_channel_credentials(pki.ca)
    if client_verify:
        assert refused_code(lambda: tls_status(server.target, without_cert)) == grpc.StatusCode.UNAVAILABLE
    else:
        assert tls_status(server.target, without_cert) == {123: STATES.AVAILABLE}


def test_a_server_certificate_from_another_ca_is_not_trusted(tls_server: tuple[TlsServer, bool], pki: Pki) -> None:
    server, _ = tls_server
    other_key = _key()
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    other_ca = _certificate("another CA", other_key, other_name, other_key, ca=True)
    credentials = grpc.ssl_channel_credentials(
        other_ca.public_bytes(serialization.Encoding.PEM), pki.client_key, pki.client_cert
    )
    assert refused_code(lambda: tls_status(server.target, credentials)) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"RTSERVE_GRPC__SSL_SERVER_CERT": "cert"}, "RTSERVE_GRPC__SSL_SERVER_KEY is empty"),
        (
            {"RTSERVE_GRPC__SSL_SERVER_KEY": "not a key", "RTSERVE_GRPC__SSL_SERVER_CERT": "cert"},
            "are not a PEM private key and the certificate chain that matches it",
        ),
    ],
    ids=["half", "not-pem"],
)
def test_tls_settings_that_cannot_serve_stop_the_start(
    tmp_path: Path, pki: Pki, settings: dict[str, str], message: str
) -> None:
    """RTSERVE_GRPC__SSL_* set by hand, wrongly: one line naming the settings, exit 1, never listening."""
    (tmp_path / "repo").mkdir()
    grpc_port = free_port()
    full_env = {
        **os.environ,
        "RTSERVE_REPOSITORY": str(tmp_path / "repo"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_PORT": str(free_port()),
        "RTSERVE_GRPC_PORT": str(grpc_port),
        "RTSERVE_HOST": "127.0.0.1",
        **{name: pki.server_cert.decode() if value == "cert" else value for name, value in settings.items()},
    }
    done = subprocess.run(rtserve_command("serve"), env=full_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0
