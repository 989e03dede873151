"""End to end on a real cluster: install the chart with helm, wait for the rollout, predict through a
port-forward, publish version 2 and see every pod serve it, and pass `helm test`.

Runs only against the development cluster of docs/kubernetes.md, so that `make test` never installs anything
into a cluster someone merely has a kubeconfig for:

* the current kubectl context must be `kind-rtserve`, or be named by RTSERVE_E2E_CONTEXT;
* the rtserve image must be in the cluster: RTSERVE_E2E_IMAGE (default `rtserve:dev`, which the docs build and
  `kind load`);
* namespace RTSERVE_E2E_NAMESPACE (default `rtserve`) gets k8s/ applied when MinIO is not there yet;
* the KServe case runs only where KServe's CRDs are installed (it is skipped with the reason elsewhere).

Without a reachable cluster (no kubeconfig, API down) the module is skipped with the reason. The test uses a
model and a release of its own (`e2e<random>`), so it runs beside a developer's own `rtserve` release.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (dev dependency)")
from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402
from kubernetes.stream import portforward  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rtserve"
DEV_VALUES = ROOT / "k8s" / "values-dev.yaml"
NAMESPACE = os.environ.get("RTSERVE_E2E_NAMESPACE", "rtserve")
IMAGE = os.environ.get("RTSERVE_E2E_IMAGE", "rtserve:dev")
DEV_CONTEXT = "kind-rtserve"
ROW = [5.1, 3.5, 1.4, 0.2]


def tool(name: str) -> str:
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed for the e2e test: run `make tools`", pytrace=False)
    return str(found)


def sh(*command: str, timeout: float = 900) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(what: str, condition: Callable[[], bool], timeout: float, interval: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)


@pytest.fixture(scope="module")
def core() -> client.CoreV1Api:
    try:
        _, current = config.list_kube_config_contexts()
    except (ConfigException, FileNotFoundError, TypeError) as error:
        pytest.skip(f"no Kubernetes cluster: no usable kubeconfig ({error})")
    name = current["name"] if current else ""
    allowed = os.environ.get("RTSERVE_E2E_CONTEXT", DEV_CONTEXT)
    if name != allowed:
        pytest.skip(
            f"current kubectl context {name!r} is not the development cluster {allowed!r}; "
            f"set RTSERVE_E2E_CONTEXT={name} to run the e2e test against it"
        )
    config.load_kube_config(context=name)
    try:
        client.VersionApi().get_code(_request_timeout=5)
    except Exception as error:  # any failure here means "no cluster to test against"
        pytest.skip(f"no Kubernetes cluster: the API of context {name!r} does not answer ({error})")
    return client.CoreV1Api()


@pytest.fixture(scope="module")
def dev_cluster(core: client.CoreV1Api) -> None:
    """k8s/ applied (MinIO, its Secret and the bucket), MinIO ready."""
    try:
        core.read_namespaced_service("minio", NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
        sh(tool("kubectl"), "apply", "-k", str(ROOT / "k8s"))
    apps = client.AppsV1Api()

    def minio_ready() -> bool:
        status = apps.read_namespaced_deployment_status("minio", NAMESPACE).status
        return bool(status.ready_replicas)

    wait_for("MinIO", minio_ready, timeout=300)


def publish_job(name: str, model: str, version: int) -> dict[str, Any]:
    """A Job that writes the demo model and pushes it as `model` version `version` (bucket created if missing)."""
    script = "\n".join(
        [
            "set -eu",
            "python - <<'PY'",
            "import os, boto3",
            "from botocore.config import Config",
            "from botocore.exceptions import ClientError",
            's3 = boto3.client("s3", endpoint_url=os.environ["RTSERVE_S3__ENDPOINT_URL"],',
            '                  config=Config(s3={"addressing_style": "path"}))',
            "try:",
            '    s3.head_bucket(Bucket="models")',
            "except ClientError:",
            '    s3.create_bucket(Bucket="models")',
            "PY",
            "rtserve demo-model /tmp/model",
            f"rtserve push /tmp/model/1 --model {model} --version {version}",
        ]
    )
    secret = {"name": "minio-credentials"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "rtserve-e2e"}},
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "publish",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sh", "-c", script],
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "RTSERVE_REPOSITORY", "value": "s3://models"},
                                {"name": "RTSERVE_S3__ENDPOINT_URL", "value": f"http://minio.{NAMESPACE}.svc:9000"},
                                {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
                                {
                                    "name": "AWS_ACCESS_KEY_ID",
                                    "valueFrom": {"secretKeyRef": {**secret, "key": "AWS_ACCESS_KEY_ID"}},
                                },
                                {
                                    "name": "AWS_SECRET_ACCESS_KEY",
                                    "valueFrom": {"secretKeyRef": {**secret, "key": "AWS_SECRET_ACCESS_KEY"}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"cpu": "1", "memory": "1Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                }
            },
        },
    }


def run_job(manifest: dict[str, Any], timeout: float = 600) -> None:
    batch = client.BatchV1Api()
    name = manifest["metadata"]["name"]
    batch.create_namespaced_job(NAMESPACE, manifest)
    outcome: dict[str, str] = {}

    def finished() -> bool:
        status = batch.read_namespaced_job_status(name, NAMESPACE).status
        if status.succeeded:
            outcome["result"] = "succeeded"
        elif status.failed and status.failed > manifest["spec"]["backoffLimit"]:
            outcome["result"] = "failed"
        return bool(outcome)

    wait_for(f"job {name}", finished, timeout=timeout)
    if outcome["result"] != "succeeded":
        pods = client.CoreV1Api().list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
        logs = [client.CoreV1Api().read_namespaced_pod_log(p.metadata.name, NAMESPACE)[-3000:] for p in pods]
        pytest.fail(f"job {name} failed:\n" + "\n---\n".join(logs), pytrace=False)


def request(
    pod: str, method: str, path: str, body: Any = None, port: int = 8080, namespace: str = NAMESPACE
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request to a pod through the API server's port-forward."""
    forward = portforward(client.CoreV1Api().connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    try:
        connection = http.client.HTTPConnection("localhost", port, timeout=30)
        connection.sock = forward.socket(port)  # type: ignore[assignment]
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        data = answer.read()
        headers = {key.lower(): value for key, value in answer.getheaders()}
        if not headers.get("content-type", "").startswith("application/json"):
            return answer.status, headers, data.decode(errors="replace")
        return answer.status, headers, json.loads(data) if data else None
    finally:
        forward.close()


@pytest.fixture(scope="module")
def release(core: client.CoreV1Api, dev_cluster: None) -> Iterator[tuple[str, str]]:
    """(release name, model name): version 1 published, the chart installed and rolled out."""
    suffix = secrets.token_hex(3)
    model, name = f"e2e{suffix}", f"rtserve-e2e-{suffix}"
    run_job(publish_job(f"{name}-v1", model, 1))
    repository, tag = IMAGE.rsplit(":", 1) if ":" in IMAGE.rsplit("/", 1)[-1] else (IMAGE, "latest")
    helm = tool("helm")
    try:
        sh(
            helm, "upgrade", "--install", name, str(CHART), "--namespace", NAMESPACE,
            "--values", str(DEV_VALUES),
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"models={{{model}}}", "--set", f"tests.model={model}",
            "--set", "autoscaling.enabled=false", "--set", "replicaCount=2",
            "--set", "ingress.enabled=false", "--set", "metrics.dashboard.enabled=false",
            "--wait", "--timeout", "10m",
        )  # fmt: skip
        apps = client.AppsV1Api()

        def rolled_out() -> bool:
            deployment = apps.read_namespaced_deployment_status(name, NAMESPACE)
            status = deployment.status
            return bool(
                status.observed_generation == deployment.metadata.generation
                and status.updated_replicas == deployment.spec.replicas
                and status.ready_replicas == deployment.spec.replicas
            )

        wait_for("the rollout", rolled_out, timeout=600)
        yield name, model
    finally:
        subprocess.run([helm, "uninstall", name, "--namespace", NAMESPACE, "--wait"], check=False, timeout=300)


def server_pods(release_name: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release_name},app.kubernetes.io/component=server"
    pods = client.CoreV1Api().list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return [pod.metadata.name for pod in pods if pod.status.phase == "Running"]


def test_rollout_predict_publish_and_helm_test(release: tuple[str, str]) -> None:
    name, model = release
    pods = server_pods(name)
    assert len(pods) == 2, pods

    for pod in pods:
        status, headers, body = request(pod, "GET", "/v2/health/ready")
        assert status == 200, (pod, body)
        status, headers, body = request(pod, "POST", f"/v1/models/{model}:predict", {"instances": [ROW]})
        assert status == 200, (pod, body)
        assert headers["x-model-version"] == "1"
        assert len(body["predictions"]) == 1 and len(body["predictions"][0]) == 3

    run_job(publish_job(f"{name}-v2", model, 2))

    def every_pod_serves_version_2() -> bool:
        for pod in pods:
            status, headers, _ = request(pod, "POST", f"/v1/models/{model}:predict", {"instances": [ROW]})
            if status != 200 or headers.get("x-model-version") != "2":
                return False
        return True

    wait_for("every pod to serve version 2", every_pod_serves_version_2, timeout=300)
    for pod in pods:
        status, _, body = request(pod, "GET", f"/v1/models/{model}")
        states = {entry["version"]: entry["state"] for entry in body["model_version_status"]}
        assert states.get("2") == "AVAILABLE", (pod, body)
    assert server_pods(name) == pods, "publishing a version must not restart pods"

    sh(tool("helm"), "test", name, "--namespace", NAMESPACE, "--timeout", "5m")


# --- KServe ---------------------------------------------------------------------------------------------------

KSERVE = ROOT / "k8s" / "kserve"
KSERVE_CRD = "inferenceservices.serving.kserve.io"
KSERVE_GROUP, RUNTIME_VERSION, ISVC_VERSION = "serving.kserve.io", "v1alpha1", "v1beta1"


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def kserve_installed(core: client.CoreV1Api, dev_cluster: None) -> None:
    try:
        client.ApiextensionsV1Api().read_custom_resource_definition(KSERVE_CRD)
    except ApiException as error:
        if error.status != 404:
            raise
        reason = f"KServe is not installed in this cluster (no CRD {KSERVE_CRD}); the KServe case needs it"
        print(reason)
        pytest.skip(reason)


def test_kserve_runtime_serves_an_inference_service(core: client.CoreV1Api, kserve_installed: None) -> None:
    """k8s/kserve's runtime (its image replaced by RTSERVE_E2E_IMAGE, its name made unique) and InferenceService
    (RawDeployment, so no Knative is needed; storageUri on the dev cluster's MinIO, credentials as KServe reads
    them from a ServiceAccount's Secret) in a namespace of their own: the ISVC gets Ready, and its pod predicts over
    V1 and V2 REST and serves /metrics on the port the runtime's annotations name."""
    suffix = secrets.token_hex(3)
    model, namespace = f"e2e{suffix}", f"rtserve-e2e-kserve-{suffix}"
    run_job(publish_job(f"rtserve-e2e-kserve-{suffix}", model, 1))
    custom = client.CustomObjectsApi()
    runtime = load_yaml(KSERVE / "cluster-serving-runtime.yaml")
    runtime["metadata"]["name"] = f"kserve-rtserve-e2e{suffix}"
    runtime["spec"]["containers"][0]["image"] = IMAGE
    runtime["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    runtime["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "250m", "memory": "1Gi"}}
    for entry in runtime["spec"]["supportedModelFormats"]:
        entry["autoSelect"] = False  # only this test's ISVC, which names it, may use it
    isvc = load_yaml(KSERVE / "inferenceservice.yaml")
    name = isvc["metadata"]["name"] = f"half-plus-two-{suffix}"
    isvc["metadata"]["namespace"] = namespace
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    predictor = isvc["spec"]["predictor"]
    predictor["serviceAccountName"] = "models"
    predictor["model"]["runtime"] = runtime["metadata"]["name"]
    predictor["model"]["storageUri"] = f"s3://models/{model}"
    credentials = core.read_namespaced_secret("minio-credentials", NAMESPACE)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "models-s3",
            "annotations": {
                "serving.kserve.io/s3-endpoint": f"minio.{NAMESPACE}.svc:9000",
                "serving.kserve.io/s3-usehttps": "0",
                "serving.kserve.io/s3-region": "us-east-1",
            },
        },
        "type": "Opaque",
        "data": {key: credentials.data[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "models"},
        "secrets": [{"name": "models-s3"}],
    }
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        core.create_namespaced_secret(namespace, secret)
        core.create_namespaced_service_account(namespace, account)
        custom.create_cluster_custom_object(KSERVE_GROUP, RUNTIME_VERSION, "clusterservingruntimes", runtime)
        custom.create_namespaced_custom_object(KSERVE_GROUP, ISVC_VERSION, namespace, "inferenceservices", isvc)

        def ready() -> bool:
            found = custom.get_namespaced_custom_object(
                KSERVE_GROUP, ISVC_VERSION, namespace, "inferenceservices", name
            )
            conditions = found.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(f"InferenceService {name} to be Ready", ready, timeout=900, interval=5)
        pods = core.list_namespaced_pod(namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
        running = [pod.metadata.name for pod in pods if pod.status.phase == "Running"]
        assert running, [pod.status.phase for pod in pods]
        pod = running[0]
        status, headers, body = request(
            pod, "POST", f"/v1/models/{name}:predict", {"instances": [ROW]}, namespace=namespace
        )
        assert status == 200, body
        assert headers["x-model-version"] == "1" and len(body["predictions"][0]) == 3
        status, _, body = request(pod, "GET", f"/v2/models/{name}/ready", namespace=namespace)
        assert status == 200, body
        annotations = runtime["spec"]["annotations"]
        port, path = int(annotations["prometheus.kserve.io/port"]), annotations["prometheus.kserve.io/path"]
        status, _, text = request(pod, "GET", path, port=port, namespace=namespace)
        assert status == 200 and "rtserve_" in str(text)
    finally:
        for delete in (
            lambda: custom.delete_namespaced_custom_object(
                KSERVE_GROUP, ISVC_VERSION, namespace, "inferenceservices", name
            ),
            lambda: custom.delete_cluster_custom_object(
                KSERVE_GROUP, RUNTIME_VERSION, "clusterservingruntimes", runtime["metadata"]["name"]
            ),
            lambda: core.delete_namespace(namespace),
        ):
            try:
                delete()
            except ApiException as error:
                if error.status != 404:
                    raise
