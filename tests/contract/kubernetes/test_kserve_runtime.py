"""rtserve as a KServe serving runtime (k8s/kserve/): the ClusterServingRuntime and the example InferenceService
match KServe's CRD schemas (../shared/schemas/crds), the runtime is what KServe's TensorFlow runtime is (formats,
container name, /usr/bin/tensorflow_model_server, /mnt/models) plus V2, its pod meets the "restricted" standard,
and the real server started with exactly the runtime's command line (KServe's placeholders filled in from the
InferenceService as KServe does; ports moved to free ones, /mnt/models to a folder laid out as the storage
initializer lays it) predicts over REST V1 and V2, gRPC V1 (TF Serving's API) and V2, and serves Prometheus
metrics where the runtime's annotations tell KServe to scrape."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import test_manifests_valid
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from image_support import final_image, replay, replayed_container
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_manifests_valid import crd_problems

from apptools import ServerProcess, free_port, wait_until
from kube_support import K8S, Manifest, load_one, restricted_violations

KSERVE = K8S / "kserve"
RUNTIME = KSERVE / "cluster-serving-runtime.yaml"
ISVC = KSERVE / "inferenceservice.yaml"
# The storage initializer's mount (KServe's constants.DefaultModelLocalMountPath).
MOUNT = "/mnt/models"
TIMEOUT_S = 30
crds_present = test_manifests_valid.crds_present


def runtime() -> Manifest:
    document: Manifest = load_one(RUNTIME)
    return document


def inference_service() -> Manifest:
    document: Manifest = load_one(ISVC)
    return document


def runtime_container() -> Manifest:
    containers: list[Manifest] = runtime()["spec"]["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"], "KServe finds its container by this name"
    return containers[0]


PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)(?:\.([\w.-]+))?\s*\}\}")


def fill_placeholders(text: str, metadata: Mapping[str, Any]) -> str:
    """KServe's ReplacePlaceholders: a Go template over the InferenceService's ObjectMeta, of which runtimes use
    {{.Name}}, {{.Namespace}}, {{.Labels.<key>}} and {{.Annotations.<key>}}."""

    def value(match: re.Match[str]) -> str:
        field, key = match.group(1), match.group(2)
        if field in {"Name", "Namespace"} and key is None:
            return str(metadata.get(field.lower(), ""))
        if field in {"Labels", "Annotations"} and key is not None:
            return str(metadata.get(field.lower(), {}).get(key, ""))
        raise AssertionError(f"placeholder not filled by KServe: {match.group(0)}")

    return PLACEHOLDER.sub(value, text)


def kserve_container(metadata: Mapping[str, Any]) -> Manifest:
    container = copy.deepcopy(runtime_container())
    container["args"] = [fill_placeholders(arg, metadata) for arg in container["args"]]
    return container


# --- The manifests --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("crds_present")
def test_manifests_match_kserve_crds() -> None:
    for document in (runtime(), inference_service()):
        assert crd_problems(document) == []


@pytest.mark.usefixtures("crds_present")
def test_crd_validation_catches_a_bad_runtime() -> None:
    """Control: the CRD schemas refuse a misspelled field and a wrongly typed one."""
    misspelled = runtime()
    misspelled["spec"]["supportedModelFormat"] = misspelled["spec"].pop("supportedModelFormats")
    assert crd_problems(misspelled)
    wrong_type = inference_service()
    wrong_type["spec"]["predictor"]["model"]["modelFormat"] = "tensorflow"
    assert crd_problems(wrong_type)


def test_runtime_is_a_tensorflow_runtime_with_v2() -> None:
    spec = runtime()["spec"]
    formats = {(f["name"], f["version"]) for f in spec["supportedModelFormats"]}
    assert formats == {("tensorflow", "1"), ("tensorflow", "2")}
    assert all(f["autoSelect"] for f in spec["supportedModelFormats"])
    assert spec["protocolVersions"] == ["v1", "v2", "grpc-v1", "grpc-v2"]
    container = runtime_container()
    # Where KServe's own TensorFlow runtime calls TF Serving, and where the image puts rtserve's command.
    assert container["command"] == ["/usr/bin/tensorflow_model_server"]
    assert "/usr/bin/tensorflow_model_server" in final_image().links
    assert container["args"][:4] == [
        "--model_name={{.Name}}",
        "--port=9000",
        "--rest_api_port=8080",
        f"--model_base_path={MOUNT}",
    ]
    assert "--rest_api_timeout_in_ms=60000" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_prometheus_annotations_name_the_rest_port() -> None:
    annotations = runtime()["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert f"--rest_api_port={annotations['prometheus.kserve.io/port']}" in runtime_container()["args"]


def test_runtime_pod_meets_the_restricted_standard() -> None:
    pod_spec = {"containers": runtime()["spec"]["containers"]}
    assert restricted_violations(pod_spec) == []
    # The image's user (the chart's runAsUser).
    assert runtime_container()["securityContext"]["runAsUser"] == 10001


def test_inference_service_uses_the_runtime() -> None:
    model = inference_service()["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime()["metadata"]["name"] == "kserve-rtserve"
    supported = {(f["name"], f["version"]) for f in runtime()["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in supported
    assert model["storageUri"].startswith(("s3://", "gs://", "pvc://", "https://"))


def test_placeholders_are_filled_as_kserve_fills_them() -> None:
    metadata = {"name": "flowers", "namespace": "ml", "labels": {"team": "a"}, "annotations": {"x": "1"}}
    assert fill_placeholders("--model_name={{.Name}}", metadata) == "--model_name=flowers"
    assert fill_placeholders("{{.Namespace}}/{{.Labels.team}}/{{ .Annotations.x }}", metadata) == "ml/a/1"
    with pytest.raises(AssertionError):
        fill_placeholders("{{.Spec}}", metadata)


# --- The runtime's command line, live ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnt_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/mnt/models as the storage initializer leaves it for a TensorFlow storageUri: the contents of the URI (the
    model's base path, holding its version folders), so the version folders sit directly in the mount. TF1
    flavour here (the Deployment test serves TF2)."""
    import modelfactory

    mount = tmp_path_factory.mktemp("mnt") / "models"
    built = modelfactory.half_plus_two_tf1(tmp_path_factory.mktemp("build") / "1")
    shutil.copytree(built, mount / "1")
    return mount


@pytest.fixture(scope="module")
def kserve(mnt_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, str]]:
    metadata = inference_service()["metadata"]
    ports = {9000: free_port(), 8080: free_port()}
    container = kserve_container(metadata)
    folder = tmp_path_factory.mktemp("kserve")
    with replayed_container(
        container, ports, {MOUNT: mnt_models}, folder, rest_port=ports[8080], grpc_port=ports[9000]
    ) as server:
        yield server, ports[9000], metadata["name"]


ROWS = [[1.0], [2.0], [5.0]]
EXPECTED = [2.5, 3.0, 4.5]


def test_rest_v1_predict(kserve: tuple[ServerProcess, int, str]) -> None:
    server, _, model = kserve
    answer = httpx.post(f"{server.url}/v1/models/{model}:predict", json={"instances": ROWS}, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    assert np.ravel(answer.json()["predictions"]).tolist() == EXPECTED
    status = httpx.get(f"{server.url}/v1/models/{model}", timeout=TIMEOUT_S).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_rest_v2_infer(kserve: tuple[ServerProcess, int, str]) -> None:
    server, _, model = kserve
    assert httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=TIMEOUT_S).status_code == 200
    body = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": ROWS}]}
    answer = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert [np.ravel(o["data"]).tolist() for o in outputs] == [EXPECTED]


def test_grpc_v1_predict(kserve: tuple[ServerProcess, int, str]) -> None:
    import tensorflow as tf

    _, grpc_port, model = kserve
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(ROWS, dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, TIMEOUT_S)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
    assert answer.model_spec.name == model
    assert tf.make_ndarray(answer.outputs["y"]).ravel().tolist() == EXPECTED
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_v2_infer(kserve: tuple[ServerProcess, int, str]) -> None:
    _, grpc_port, model = kserve
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        assert client.is_model_ready(model)
        data = triton.InferInput("x", [3, 1], "FP32")
        data.set_data_from_numpy(np.array(ROWS, dtype=np.float32))
        result = client.infer(model, [data], client_timeout=TIMEOUT_S)
    finally:
        client.close()
    output = result.get_response().outputs[0].name
    assert result.as_numpy(output).ravel().tolist() == EXPECTED


def test_metrics_where_the_annotations_point(kserve: tuple[ServerProcess, int, str]) -> None:
    """KServe scrapes prometheus.kserve.io/path on prometheus.kserve.io/port: the REST port (8080, moved)."""
    server, _, _ = kserve
    path = runtime()["spec"]["annotations"]["prometheus.kserve.io/path"]
    answer = httpx.get(server.url + path, timeout=TIMEOUT_S)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert any(name.startswith("rtserve_") for name in names), sorted(names)[:20]


def test_a_bare_saved_model_in_the_mount_is_refused_as_tf_serving_refuses_it(tmp_path: Path) -> None:
    """A storageUri that points at the SavedModel itself leaves /mnt/models/saved_model.pb without a version
    folder. TF Serving's runtime then finds no version (its base path holds the version folders) and so does
    rtserve: not ready, the model status says so, the server keeps running. The docs say to point storageUri at
    the base path (or keep the version folder in the archive)."""
    import modelfactory

    mount = modelfactory.half_plus_two_tf2(tmp_path / "mnt" / "models")
    metadata = inference_service()["metadata"]
    ports = {9000: free_port(), 8080: free_port()}
    env, command = replay(kserve_container(metadata), ports, {MOUNT: mount}, tmp_path / "run", ports[9000])
    server = ServerProcess(env, ports[8080], tmp_path / "bare.log", command)
    try:

        def live() -> bool:
            assert server.process.poll() is None, server.log()
            try:
                return httpx.get(f"{server.url}/v2/health/live", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, 90, 0.2, "the server to be live")
        status = httpx.get(f"{server.url}/v1/models/{metadata['name']}", timeout=TIMEOUT_S)
        assert status.status_code == 404
        # The wording is TF Serving's ("Could not find any versions of model <name>"), quoting aside.
        error = status.json()["error"]
        assert error.startswith("Could not find any versions of model") and metadata["name"] in error
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=TIMEOUT_S).status_code != 200
    finally:
        assert server.terminate() == 0, server.log()
