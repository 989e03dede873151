"""The chart through the real `helm`: lint, render every scenario, refuse bad values, and the rendered objects
have the properties issue 3 and DESIGN.md ask for (probes, shutdown timing, security, autoscaling, ...)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_support import (
    CHART,
    NAMESPACE,
    Manifest,
    Rendering,
    helm_template,
    load_one,
    merged_values,
    nginx_size_bytes,
    restricted_violations,
    run,
    run_ok,
    scenario_files,
    scenario_name,
    selects,
)

SCENARIOS = [scenario_name(path) for path in scenario_files()]
DEFAULTS = "ci/default-values"
AUTOSCALING = "ci/autoscaling-values"
INGRESS = "ci/ingress-netpol-values"
MONITORING = "ci/monitoring-values"
GRPC = "ci/grpc-values"
GRPC_OFF = "ci/grpc-off-values"
DEV = "k8s/values-dev"
MINIMAL = ["--set", "repository.uri=s3://models"]


def pod_specs(rendering: Rendering) -> list[tuple[str, Manifest, Manifest]]:
    """(what, pod metadata, pod spec) of the Deployment's template and the helm test pod."""
    deployment = rendering.deployment()["spec"]["template"]
    test_pod = rendering.test_pod()
    return [
        ("Deployment", deployment["metadata"], deployment["spec"]),
        ("test pod", test_pod["metadata"], test_pod["spec"]),
    ]


# --- helm lint and template -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", scenario_files(), ids=scenario_name)
def test_helm_lint_strict(helm_bin: Path, values_file: Path) -> None:
    result = run([helm_bin, "lint", "--strict", CHART, "--namespace", NAMESPACE, "--values", values_file])
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_ci_scenarios_exist() -> None:
    names = {path.stem for path in (CHART / "ci").glob("*.yaml")}
    assert {
        "default-values",
        "autoscaling-values",
        "ingress-netpol-values",
        "monitoring-values",
        "grpc-values",
        "grpc-off-values",
    } <= names


@pytest.mark.parametrize(
    ("scenario", "present", "absent"),
    [
        (
            DEFAULTS,
            {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod"}
            | {"HorizontalPodAutoscaler"},
            {"Ingress", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "GRPCRoute"},
        ),
        (AUTOSCALING, {"HorizontalPodAutoscaler", "PodDisruptionBudget"}, {"Ingress", "ServiceMonitor"}),
        (INGRESS, {"Ingress", "NetworkPolicy", "HorizontalPodAutoscaler"}, {"ServiceAccount", "GRPCRoute"}),
        (MONITORING, {"ServiceMonitor", "PrometheusRule"}, {"Ingress", "NetworkPolicy"}),
        (DEV, {"HorizontalPodAutoscaler", "Ingress", "NetworkPolicy"}, {"ServiceMonitor", "PrometheusRule"}),
        (GRPC, {"Ingress", "GRPCRoute", "NetworkPolicy", "ServiceMonitor"}, {"PrometheusRule"}),
        (GRPC_OFF, {"Service", "NetworkPolicy"}, {"HorizontalPodAutoscaler", "Ingress", "GRPCRoute"}),
    ],
)
def test_scenario_renders_its_objects(
    chart_renderings: dict[str, Rendering], scenario: str, present: set[str], absent: set[str]
) -> None:
    kinds = {obj["kind"] for obj in chart_renderings[scenario].objects}
    assert present <= kinds, f"missing {present - kinds}"
    assert not absent & kinds, f"unexpected {absent & kinds}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_are_namespaced_and_labelled(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    for obj in rendering.objects:
        metadata = obj["metadata"]
        assert metadata.get("namespace"), f"{obj['kind']}/{metadata['name']} has no namespace"
        labels = metadata.get("labels", {})
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']}/{metadata['name']} lacks label {key}"
        assert len(metadata["name"]) <= 63


# --- values.schema.json ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"repository": {"uri": "s3://models"}, "replicaCont": 3}, "replicaCont"),
        ({"repository": {"uri": "s3://models"}, "image": {"tagg": "1.0"}}, "tagg"),
        (
            {"repository": {"uri": "s3://models"}, "autoscaling": {"inflightRequest": {"enabled": True}}},
            "inflightRequest",
        ),
        ({"repository": {"uri": "s3://models"}, "ingress": {"tls": {"secretname": "x"}}}, "secretname"),
        ({"repository": {"uri": "s3://models"}, "metrics": {"serviceMonitor": {"intervall": "5s"}}}, "intervall"),
        ({"repository": {"uri": "s3://models"}, "server": {"port": "http"}}, "port"),
        ({"repository": {"uri": "s3://models"}, "server": {"logLevel": "verbose"}}, "logLevel"),
        ({"repository": {"uri": "s3://models"}, "extraConfig": {"POLL_JITTER": "0.2"}}, "POLL_JITTER"),
        ({"repository": {"uri": "s3://models"}, "extraEnv": [{"name": "RTSERVE_PORT", "value": "1"}]}, "extraEnv"),
        ({"repository": {"uri": "models"}}, "uri"),
        ({"repository": {"uri": "s3://models"}, "loading": {"signatureRunner": "graph"}}, "signatureRunner"),
    ],
    ids=[
        "top-level",
        "image",
        "autoscaling",
        "ingress-tls",
        "servicemonitor",
        "port-type",
        "log-level",
        "extra-config-name",
        "extra-env-rtserve",
        "repository-uri",
        "signature-runner",
    ],
)
def test_schema_rejects_bad_values(helm_bin: Path, tmp_path: Path, overrides: dict[str, Any], complaint: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(overrides), encoding="utf-8")
    result = run([helm_bin, "template", "rtserve", CHART, "--namespace", NAMESPACE, "--values", values])
    assert result.returncode != 0, f"helm template accepted {overrides}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr


def test_schema_is_closed_everywhere() -> None:
    """Every object in values.schema.json with declared properties forbids others."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path or "/")
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    assert open_objects == [], f"objects without additionalProperties: false: {open_objects}"


def test_schema_and_values_list_the_same_keys() -> None:
    """values.yaml sets every key the schema declares (so each is documented there), and vice versa."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = load_one(CHART / "values.yaml")

    def compare(node: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
        problems: list[str] = []
        declared = set(node.get("properties", {})) - {"global"}
        problems += [f"{path}{key}: in the schema, not in values.yaml" for key in declared - set(value)]
        problems += [f"{path}{key}: in values.yaml, not in the schema" for key in set(value) - declared]
        for key in declared & set(value):
            child = node["properties"][key]
            if child.get("additionalProperties") is False and isinstance(value[key], dict):
                problems += compare(child, value[key], f"{path}{key}.")
        return problems

    assert compare(schema, values, "") == []


def test_repository_uri_is_required(helm_bin: Path) -> None:
    result = run([helm_bin, "template", "rtserve", CHART, "--namespace", NAMESPACE])
    assert result.returncode != 0
    assert "repository.uri is required" in result.stderr


def test_kube_version_range_is_enforced(helm_bin: Path) -> None:
    chart = load_one(CHART / "Chart.yaml")
    lowest = re.search(r">=\s*v?(\d+)\.(\d+)", chart["kubeVersion"])
    assert lowest, chart["kubeVersion"]
    major, minor = int(lowest.group(1)), int(lowest.group(2))
    run_ok([helm_bin, "template", "rtserve", CHART, *MINIMAL, "--kube-version", f"{major}.{minor}.0"])
    below = run([helm_bin, "template", "rtserve", CHART, *MINIMAL, "--kube-version", f"{major}.{minor - 1}.0"])
    assert below.returncode != 0 and "kubeVersion" in below.stderr, below.stderr


def test_extra_config_cannot_shadow_chart_settings(helm_bin: Path) -> None:
    result = run([helm_bin, "template", "rtserve", CHART, *MINIMAL, "--set", "extraConfig.RTSERVE_PORT=9000"])
    assert result.returncode != 0 and "extraConfig.RTSERVE_PORT" in result.stderr, result.stderr


# --- The Deployment -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_use_the_health_endpoints(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    container = rendering.container()
    port_names = {port["name"] for port in container["ports"]}
    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        if probe != "livenessProbe" and merged_values(rendering)["probes"]["grpc"]:
            # The native gRPC probe: a port number (no names), the whole server's health (service "").
            assert "httpGet" not in container[probe]
            grpc_port = int(rendering.config()["RTSERVE_GRPC_PORT"])
            assert container[probe]["grpc"] == {"port": grpc_port, "service": ""}, probe
            continue
        http = container[probe]["httpGet"]
        assert http["path"] == path, f"{probe} checks {http['path']}"
        assert http["port"] in port_names, f"{probe} port {http['port']} is not a container port"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup must allow a slow first load"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shutdown_timing_is_sized_from_the_drain_timeout(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    shutdown = merged_values(rendering)["shutdown"]
    pod = rendering.deployment()["spec"]["template"]["spec"]
    config = rendering.config()
    assert int(config["RTSERVE_DRAIN_TIMEOUT_S"]) == shutdown["drainTimeoutSeconds"]
    assert int(config["RTSERVE_SHUTDOWN_DELAY_S"]) == shutdown["shutdownDelaySeconds"]
    sleep = shutdown["preStopSleepSeconds"]
    command = rendering.container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sleep", str(sleep)]
    grace = pod["terminationGracePeriodSeconds"]
    needed = sleep + shutdown["shutdownDelaySeconds"] + shutdown["drainTimeoutSeconds"]
    assert grace == needed + shutdown["extraGraceSeconds"]
    assert grace > needed


def test_grace_period_follows_the_values(helm_bin: Path) -> None:
    rendering = helm_template(
        helm_bin,
        [],
        *MINIMAL,
        "--set",
        "shutdown.drainTimeoutSeconds=100",
        "--set",
        "shutdown.preStopSleepSeconds=0",
        "--set",
        "shutdown.shutdownDelaySeconds=7",
    )
    pod = rendering.deployment()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 0 + 7 + 100 + 5
    assert "lifecycle" not in rendering.container(), "preStopSleepSeconds=0 must drop the hook"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rollout_never_drops_capacity(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    spec = rendering.deployment()["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    autoscaled = bool(rendering.of_kind("HorizontalPodAutoscaler"))
    assert ("replicas" in spec) is not autoscaled, "replicas belongs to the HPA when autoscaling is on"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_spread_over_hosts(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    template = chart_renderings[scenario].deployment()["spec"]["template"]
    constraints = template["spec"]["topologySpreadConstraints"]
    by_key = {c["topologyKey"]: c for c in constraints}
    assert "kubernetes.io/hostname" in by_key
    for constraint in constraints:
        assert selects(constraint["labelSelector"]["matchLabels"], template["metadata"]["labels"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_security_standard_restricted(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    for what, _, spec in pod_specs(chart_renderings[scenario]):
        assert restricted_violations(spec) == [], what
        assert spec["automountServiceAccountToken"] is False, what
        assert spec["enableServiceLinks"] is False, f"{what}: service links would inject RTSERVE_PORT=tcp://..."
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert isinstance(context["runAsUser"], int) and context["runAsUser"] >= 10000
            assert "requests" in container["resources"] and "limits" in container["resources"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{what}: /tmp must be a writable volume"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cache_and_tmp_are_empty_dirs(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    spec = rendering.deployment()["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in rendering.container()["volumeMounts"]}
    cache_dir = rendering.config()["RTSERVE_CACHE_DIR"]
    for path in (cache_dir, "/tmp"):
        assert path in mounts, f"{path} is not mounted"
        volume = volumes[mounts[path]]
        assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), volume


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_account_token_is_not_mounted(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    pod = rendering.deployment()["spec"]["template"]["spec"]
    accounts = rendering.of_kind("ServiceAccount")
    if merged_values(rendering)["serviceAccount"]["create"]:
        assert [sa["metadata"]["name"] for sa in accounts] == [pod["serviceAccountName"]]
        assert accounts[0]["automountServiceAccountToken"] is False
    else:
        assert accounts == []
        assert pod["serviceAccountName"] == merged_values(rendering)["serviceAccount"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_comes_from_the_configmap_with_a_checksum(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    configmap = next(c for c in rendering.of_kind("ConfigMap") if "RTSERVE_REPOSITORY" in c["data"])
    container = rendering.container()
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in container["envFrom"]
    annotations = rendering.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    direct = {env["name"] for env in container.get("env", [])}
    assert not {name for name in direct if name.startswith("RTSERVE_")}, "RTSERVE_* belong in the ConfigMap"


def test_checksum_changes_with_the_config_only(helm_bin: Path) -> None:
    def checksum(*sets: str) -> str:
        extra = [arg for pair in (("--set", value) for value in sets) for arg in pair]
        rendering = helm_template(helm_bin, [], *MINIMAL, *extra)
        annotation: str = rendering.deployment()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = checksum()
    assert checksum("server.logLevel=debug") != base
    assert checksum("repository.pollIntervalSeconds=30") != base
    assert checksum("replicaCount=5") == base


def test_s3_credentials_come_from_the_existing_secret(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[AUTOSCALING]
    secret = merged_values(rendering)["repository"]["s3"]["existingSecret"]
    env = {item["name"]: item for item in rendering.container()["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name], f"{name} must not be a literal"
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret
    assert not [obj for obj in rendering.objects if obj["kind"] == "Secret"], "the chart creates no Secret"
    defaults = {item["name"] for item in chart_renderings[DEFAULTS].container()["env"]}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & defaults


@pytest.mark.parametrize(
    ("cpu", "threads"),
    [("100m", 1), ("500m", 1), ("1000m", 1), ("1001m", 2), ("1500m", 2), ("1", 1), ("2", 2), ("2.5", 3), ("4", 4)],
)
def test_tensorflow_threads_follow_the_cpu_request(helm_bin: Path, cpu: str, threads: int) -> None:
    rendering = helm_template(helm_bin, [], *MINIMAL, "--set-string", f"resources.requests.cpu={cpu}")
    config = rendering.config()
    assert config["RTSERVE_TENSORFLOW__INTRA_OP_THREADS"] == str(threads)
    assert config["RTSERVE_TENSORFLOW__INTER_OP_THREADS"] == str(threads)
    assert threads == max(1, math.ceil(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)))


def test_tensorflow_threads_explicit_and_unset(helm_bin: Path, chart_renderings: dict[str, Rendering]) -> None:
    config = chart_renderings[MONITORING].config()
    assert config["RTSERVE_TENSORFLOW__INTRA_OP_THREADS"] == "4"
    assert config["RTSERVE_TENSORFLOW__INTER_OP_THREADS"] == "2"
    # Without a CPU request the HPA (on CPU utilization) cannot work, so it is off here.
    unset = helm_template(
        helm_bin, [], *MINIMAL, "--set", "resources.requests.cpu=null", "--set", "autoscaling.enabled=false"
    ).config()
    assert "RTSERVE_TENSORFLOW__INTRA_OP_THREADS" not in unset, "no request: the server sizes from its cgroup"


@pytest.mark.parametrize("runner", ["auto", "session", "function"])
def test_signature_runner_reaches_the_server(helm_bin: Path, runner: str) -> None:
    config = helm_template(helm_bin, [], *MINIMAL, "--set", f"loading.signatureRunner={runner}").config()
    assert config["RTSERVE_SIGNATURE_RUNNER"] == runner


def test_onednn_is_tensorflows_default_unless_turned_off(chart_renderings: dict[str, Rendering]) -> None:
    def tf_env(scenario: str) -> dict[str, str]:
        env = chart_renderings[scenario].container().get("env", [])
        return {item["name"]: item.get("value", "") for item in env if item["name"].startswith("TF_")}

    assert tf_env(MONITORING) == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # tensorflow.onednn: false
    assert tf_env("ci/default-values") == {}  # TensorFlow decides (on, for x86)


# --- Service, HPA, PDB, Ingress, NetworkPolicy ----------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_selects_only_the_server_pods(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    service = rendering.service()
    labels = rendering.deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], labels)
    assert selects(rendering.deployment()["spec"]["selector"]["matchLabels"], labels)
    assert not selects(service["spec"]["selector"], rendering.test_pod()["metadata"]["labels"]), (
        "the helm test pod must not become an endpoint"
    )
    port = service["spec"]["ports"][0]
    assert port["targetPort"] == "http"
    assert port["targetPort"] in {p["name"] for p in rendering.container()["ports"]}


def test_hpa_scales_on_cpu_and_in_flight_requests(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[AUTOSCALING]
    values = merged_values(rendering)["autoscaling"]
    hpa = rendering.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendering.deployment()["metadata"]["name"],
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (values["minReplicas"], values["maxReplicas"])
    by_type = {metric["type"]: metric for metric in spec["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert by_type["Resource"]["resource"]["target"]["averageUtilization"] == values["targetCPUUtilizationPercentage"]
    pods = by_type["Pods"]["pods"]
    assert pods["metric"]["name"] == "rtserve_inflight_requests"
    assert pods["target"] == {"type": "AverageValue", "averageValue": values["inflightRequests"]["averageValue"]}
    assert (
        spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == values["scaleDown"]["stabilizationWindowSeconds"]
    )
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


def test_hpa_without_custom_metric(helm_bin: Path) -> None:
    rendering = helm_template(helm_bin, [], *MINIMAL, "--set", "autoscaling.enabled=true")
    metrics = rendering.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [metric["type"] for metric in metrics] == ["Resource"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pdb_covers_the_server_pods(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    pdb = rendering.one("PodDisruptionBudget")["spec"]
    labels = rendering.deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["selector"]["matchLabels"], labels)
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)


@pytest.mark.parametrize(("scenario", "extra"), [(INGRESS, []), (DEFAULTS, ["--set", "ingress.enabled=true"])])
def test_ingress_body_limit_matches_the_server(
    helm_bin: Path, chart_renderings: dict[str, Rendering], scenario: str, extra: list[str]
) -> None:
    rendering = chart_renderings[scenario]
    if extra:
        rendering = helm_template(helm_bin, rendering.values_files, *extra)
    ingress = rendering.one("Ingress")
    limit = int(rendering.config()["RTSERVE_MAX_BODY_BYTES"])
    annotations = ingress["metadata"]["annotations"]
    keys = merged_values(rendering)["ingress"]["bodySizeAnnotations"]
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in annotations
    for key in keys:
        assert nginx_size_bytes(annotations[key]) == limit, f"{key}={annotations[key]} but the server takes {limit}"
    assert ingress["spec"]["ingressClassName"] == merged_values(rendering)["ingress"]["className"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": rendering.service()["metadata"]["name"], "port": {"name": "http"}}


def test_ingress_class_is_configurable(helm_bin: Path) -> None:
    rendering = helm_template(
        helm_bin, [], *MINIMAL, "--set", "ingress.enabled=true", "--set", "ingress.className=traefik"
    )
    assert rendering.one("Ingress")["spec"]["ingressClassName"] == "traefik"


@pytest.mark.parametrize("scenario", [INGRESS, DEV])
def test_network_policy_guards_the_server(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    policy = rendering.one("NetworkPolicy")["spec"]
    labels = rendering.deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    assert not selects(policy["podSelector"]["matchLabels"], rendering.test_pod()["metadata"]["labels"])
    assert "Ingress" in policy["policyTypes"]
    grpc = ["grpc"] if merged_values(rendering)["grpc"]["enabled"] else []
    assert [port["port"] for port in policy["ingress"][0]["ports"]] == ["http", *grpc]
    peers = policy["ingress"][0]["from"]
    assert {"podSelector": {}} in peers, "the release namespace (helm test, Prometheus) must reach the server"
    if "Egress" in policy["policyTypes"]:
        dns = [rule for rule in policy["egress"] if {"port": 53, "protocol": "UDP"} in rule.get("ports", [])]
        assert dns, "egress must allow DNS"


def test_network_policy_without_peers_denies_all(helm_bin: Path) -> None:
    rendering = helm_template(
        helm_bin,
        [],
        *MINIMAL,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.allowSameNamespace=false",
        "--set-json",
        "networkPolicy.ingressFrom=[]",
    )
    assert rendering.one("NetworkPolicy")["spec"]["ingress"] == []


def test_prometheus_operator_objects(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[MONITORING]
    monitor = rendering.one("ServiceMonitor")
    service = rendering.service()
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = [rule for group in rendering.one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]
    assert all(rule.get("alert", "Rtserve").startswith("Rtserve") for rule in rules)
    assert all(rule.get("record", "rtserve:").startswith("rtserve:") for rule in rules)
    pod_annotations = rendering.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in pod_annotations, "metrics.podAnnotations=false"


def test_dashboard_configmap_for_the_grafana_sidecar(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[MONITORING]
    dashboards = [c for c in rendering.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == 1
    configmap = dashboards[0]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(configmap["data"]["rtserve.json"])
    assert dashboard["uid"] == "rtserve" and dashboard["panels"]
    source = (CHART / "files" / "dashboard.json").read_text(encoding="utf-8")
    assert (
        hashlib.sha256(configmap["data"]["rtserve.json"].strip().encode()).hexdigest()
        == hashlib.sha256(source.strip().encode()).hexdigest()
    )


def test_scrape_annotations_point_at_the_metrics_port(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[DEV]
    annotations = rendering.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == int(rendering.config()["RTSERVE_PORT"])


# --- helm test pod and NOTES ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_test_pod_targets_the_service(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    pod = rendering.test_pod()
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
    service = rendering.service()
    expected = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    assert env["TARGET_URL"] == expected
    assert pod["spec"]["containers"][0]["image"] == rendering.container()["image"]


def test_notes_show_port_forward_and_curl(helm_bin: Path, tmp_path: Path) -> None:
    """NOTES.txt through a client-side dry-run install (no cluster: KUBECONFIG points nowhere)."""
    result = run_ok(
        [
            helm_bin,
            "install",
            "rtserve",
            CHART,
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "--values",
            CHART.parent.parent / "k8s" / "values-dev.yaml",
        ],
        env={"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    notes = result.split("NOTES:", 1)[1]
    assert "kubectl -n rtserve port-forward svc/rtserve 8080:8080" in notes
    assert "curl -s -d '{\"instances\": [[5.1,3.5,1.4,0.2]]}' localhost:8080/v1/models/iris:predict" in notes
    assert "helm test rtserve -n rtserve" in notes
