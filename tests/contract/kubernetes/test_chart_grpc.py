"""The chart's gRPC front end (issue 11, point 5), rendered by the real `helm`: the port on the pod and the
Service, the RTSERVE_GRPC_* settings, the headless Service, the gRPC Ingress and GRPCRoute options, the
NetworkPolicy and ServiceMonitor, NOTES, the HPA now on by default, and the values that must be refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_support import (
    CHART,
    K8S,
    NAMESPACE,
    ROOT,
    Manifest,
    Rendering,
    helm_template,
    load_all,
    load_one,
    merged_values,
    nginx_size_bytes,
    run,
    run_ok,
    scenario_files,
    scenario_name,
    selects,
)

SCENARIOS = [scenario_name(path) for path in scenario_files()]
GRPC = "ci/grpc-values"
GRPC_OFF = "ci/grpc-off-values"
DEFAULTS = "ci/default-values"
DEV = "k8s/values-dev"
MINIMAL = ["--set", "repository.uri=s3://models"]
H2C = "kubernetes.io/h2c"


def grpc_on(rendering: Rendering) -> bool:
    return bool(merged_values(rendering)["grpc"]["enabled"])


def port_named(ports: list[Manifest], name: str) -> Manifest | None:
    return next((port for port in ports if port["name"] == name), None)


def grpc_objects(rendering: Rendering) -> list[Manifest]:
    """The objects that exist only for gRPC: `<fullname>-grpc` Service, Ingress and GRPCRoute."""
    name = f"{rendering.deployment()['metadata']['name']}-grpc"
    return [obj for obj in rendering.objects if obj["metadata"]["name"] == name]


def test_grpc_scenarios_cover_on_and_off(chart_renderings: dict[str, Rendering]) -> None:
    """Control for the parametrized checks below: both branches are rendered."""
    assert {grpc_on(chart_renderings[s]) for s in SCENARIOS} == {True, False}
    assert grpc_on(chart_renderings[DEFAULTS]), "gRPC is on by default"


# --- Port, Service, settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grpc_port_on_pod_and_service(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    values = merged_values(rendering)
    config = rendering.config()
    container_port = port_named(rendering.container()["ports"], "grpc")
    service_port = port_named(rendering.service()["spec"]["ports"], "grpc")
    if not grpc_on(rendering):
        assert config["RTSERVE_GRPC_PORT"] == "0", "gRPC off is port 0 for the server"
        assert container_port is None and service_port is None
        assert not [name for name in config if name.startswith("RTSERVE_GRPC__")]
        assert grpc_objects(rendering) == []
        return
    assert container_port == {"name": "grpc", "containerPort": values["grpc"]["port"], "protocol": "TCP"}
    assert int(config["RTSERVE_GRPC_PORT"]) == container_port["containerPort"] != int(config["RTSERVE_PORT"])
    assert service_port == {
        "name": "grpc",
        "port": values["service"]["grpcPort"],
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": H2C,
    }
    # HTTP keeps its own port, probes and scrape target.
    http = port_named(rendering.service()["spec"]["ports"], "http")
    assert http is not None and http["appProtocol"] == "http"


def test_grpc_values_become_settings(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[GRPC]
    grpc = merged_values(rendering)["grpc"]
    config = rendering.config()
    assert {name: value for name, value in config.items() if name.startswith("RTSERVE_GRPC")} == {
        "RTSERVE_GRPC_PORT": str(grpc["port"]),
        "RTSERVE_GRPC__MAX_CONCURRENT_RPCS": str(grpc["maxConcurrentRpcs"]),
        "RTSERVE_GRPC__MAX_CONNECTION_AGE_S": str(grpc["maxConnectionAgeSeconds"]),
        "RTSERVE_GRPC__KEEPALIVE_MIN_PING_INTERVAL_S": str(grpc["keepaliveMinPingIntervalSeconds"]),
        "RTSERVE_GRPC__TENSOR_CONTENT": "true",
        "RTSERVE_GRPC__AUTH_EXEMPT_HEALTH": "true",
    }
    defaults = chart_renderings[DEFAULTS].config()
    assert defaults["RTSERVE_GRPC_PORT"] == "8081"
    assert defaults["RTSERVE_GRPC__TENSOR_CONTENT"] == "false"


def test_grpc_port_must_differ_from_the_http_port(helm_bin: Path) -> None:
    result = run([helm_bin, "template", "rtserve", CHART, *MINIMAL, "--set", "grpc.port=8080"])
    assert result.returncode != 0 and "gRPC needs a port of its own" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"grpc": {"prot": 9000}}, "prot"),
        ({"grpc": {"port": "grpc"}}, "port"),
        ({"grpc": {"port": 80}}, "port"),
        ({"grpc": {"maxConcurrentRpcs": 0}}, "maxConcurrentRpcs"),
        ({"grpc": {"maxConnectionAgeSeconds": -1}}, "maxConnectionAgeSeconds"),
        ({"grpc": {"keepaliveMinPingIntervalSeconds": 0}}, "keepaliveMinPingIntervalSeconds"),
        ({"grpc": {"ingress": {"tls": {"enabled": True}}}}, "enabled"),
        ({"grpc": {"grpcRoute": {"parentRefs": [{"namespace": "infra"}]}}}, "name"),
        ({"service": {"grpcPort": 0}}, "grpcPort"),
    ],
    ids=["typo", "port-type", "port-privileged", "rpcs", "age", "ping", "ingress-tls", "parent-name", "svc-port"],
)
def test_schema_rejects_bad_grpc_values(
    helm_bin: Path, tmp_path: Path, overrides: dict[str, Any], complaint: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"repository": {"uri": "s3://models"}, **overrides}), encoding="utf-8")
    result = run([helm_bin, "template", "rtserve", CHART, "--namespace", NAMESPACE, "--values", values])
    assert result.returncode != 0, f"helm template accepted {overrides}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["grpc.enabled=false", "grpc.headlessService.enabled=true"], "grpc.headlessService.enabled needs grpc"),
        (["grpc.enabled=false", "grpc.ingress.enabled=true"], "grpc.ingress.enabled needs grpc.enabled"),
        (["grpc.enabled=false", "grpc.grpcRoute.enabled=true"], "grpc.grpcRoute.enabled needs grpc.enabled"),
        (["grpc.ingress.enabled=true"], "grpc.ingress.host is required"),
        (["grpc.ingress.enabled=true", "grpc.ingress.host=g.example.com"], "grpc.ingress.tls.secretName"),
        (
            [
                "grpc.ingress.enabled=true",
                "grpc.ingress.host=x.example.com",
                "grpc.ingress.tls.secretName=t",
                "ingress.enabled=true",
                "ingress.host=x.example.com",
            ],
            "must differ from ingress.host",
        ),
        (["grpc.grpcRoute.enabled=true"], "grpc.grpcRoute.parentRefs is required"),
        (["resources.requests.cpu=null"], "resources.requests.cpu"),
        (["grpc.enabled=false", "probes.grpc=true"], "probes.grpc needs grpc.enabled"),
        (
            ["probes.grpc=true", "auth.existingSecret=keys", "grpc.authExemptHealth=false"],
            "the kubelet's gRPC probe sends no API key",
        ),
    ],
    ids=[
        "headless-off",
        "ingress-off",
        "route-off",
        "host",
        "tls",
        "same-host",
        "parent",
        "hpa-without-cpu",
        "probe-off",
        "probe-auth",
    ],
)
def test_inconsistent_values_fail_with_a_message(helm_bin: Path, sets: list[str], complaint: str) -> None:
    args = [arg for value in sets for arg in ("--set", value)]
    result = run([helm_bin, "template", "rtserve", CHART, *MINIMAL, *args])
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_grpc_probes_are_optional(chart_renderings: dict[str, Rendering]) -> None:
    """HTTP probes by default; probes.grpc swaps startup and readiness (never liveness) for the native gRPC
    probe on the gRPC port."""
    assert load_one(CHART / "values.yaml")["probes"]["grpc"] is False
    for scenario in (DEFAULTS, DEV):
        container = chart_renderings[scenario].container()
        assert all("httpGet" in container[probe] for probe in ("startupProbe", "readinessProbe", "livenessProbe"))
    container = chart_renderings[GRPC].container()
    grpc_port = port_named(container["ports"], "grpc")
    assert grpc_port is not None
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port["containerPort"], "service": ""}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


# --- Headless Service, Ingress, GRPCRoute, NetworkPolicy, ServiceMonitor ---------------------------------------


def test_headless_service_for_client_side_round_robin(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[GRPC]
    name = f"{rendering.deployment()['metadata']['name']}-grpc"
    headless = next(s for s in rendering.of_kind("Service") if s["metadata"]["name"] == name)
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
    labels = rendering.deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(spec["selector"], labels)
    assert not selects(spec["selector"], rendering.test_pod()["metadata"]["labels"])
    assert spec["ports"] == [port_named(rendering.service()["spec"]["ports"], "grpc")]
    assert headless["metadata"]["annotations"] == merged_values(rendering)["grpc"]["headlessService"]["annotations"]
    assert len(name) <= 63
    assert [s["metadata"]["name"] for s in chart_renderings[DEFAULTS].of_kind("Service")] == ["rtserve"]


def test_grpc_ingress_for_ingress_nginx(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[GRPC]
    values = merged_values(rendering)
    ingress = next(i for i in rendering.of_kind("Ingress") if i["metadata"]["name"].endswith("-grpc"))
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    limit = int(rendering.config()["RTSERVE_MAX_BODY_BYTES"])
    for key in values["ingress"]["bodySizeAnnotations"]:
        assert nginx_size_bytes(annotations[key]) == limit, f"{key}: the controller would cap gRPC messages"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "300"
    host = values["grpc"]["ingress"]["host"]
    spec = ingress["spec"]
    assert spec["tls"] == [{"hosts": [host], "secretName": values["grpc"]["ingress"]["tls"]["secretName"]}]
    rule = spec["rules"][0]
    assert rule["host"] == host
    path = rule["http"]["paths"][0]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    assert backend == {"name": rendering.service()["metadata"]["name"], "port": {"name": "grpc"}}
    # The HTTP Ingress stays HTTP, on its own host.
    http = next(i for i in rendering.of_kind("Ingress") if i is not ingress)
    assert "nginx.ingress.kubernetes.io/backend-protocol" not in http["metadata"]["annotations"]
    assert http["spec"]["rules"][0]["host"] != host


def test_grpc_route_for_the_gateway_api(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[GRPC]
    values = merged_values(rendering)["grpc"]["grpcRoute"]
    route = rendering.one("GRPCRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == values["parentRefs"]
    assert spec["hostnames"] == values["hostnames"]
    service = rendering.service()
    grpc_port = port_named(service["spec"]["ports"], "grpc")
    assert grpc_port is not None and grpc_port["appProtocol"] == H2C
    assert spec["rules"] == [{"backendRefs": [{"name": service["metadata"]["name"], "port": grpc_port["port"]}]}]


@pytest.mark.parametrize("scenario", [GRPC, GRPC_OFF, DEV])
def test_network_policy_lets_grpc_in_where_http_is(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    rendering = chart_renderings[scenario]
    rules = rendering.one("NetworkPolicy")["spec"]["ingress"]
    container_ports = {port["name"] for port in rendering.container()["ports"]}
    for rule in rules:
        ports = [port["port"] for port in rule["ports"]]
        assert ports == (["http", "grpc"] if grpc_on(rendering) else ["http"])
        assert set(ports) <= container_ports


def test_service_monitor_scrapes_http_only(chart_renderings: dict[str, Rendering]) -> None:
    """With the headless Service also matching its selector, the ServiceMonitor still finds one `http` port: no
    pod is scraped twice, and never over gRPC."""
    rendering = chart_renderings[GRPC]
    monitor = rendering.one("ServiceMonitor")
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["http"]
    selected = [
        s
        for s in rendering.of_kind("Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(selected) == 2, "control: the headless Service matches the selector too"
    with_http = [s for s in selected if port_named(s["spec"]["ports"], "http") is not None]
    assert [s["metadata"]["name"] for s in with_http] == [rendering.service()["metadata"]["name"]]


# --- Autoscaling by default -----------------------------------------------------------------------------------


def test_hpa_renders_by_default_on_cpu(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[DEFAULTS]
    spec = rendering.one("HorizontalPodAutoscaler")["spec"]
    values = load_one(CHART / "values.yaml")["autoscaling"]
    assert values["enabled"] is True
    assert spec["scaleTargetRef"]["name"] == rendering.deployment()["metadata"]["name"]
    # CPU only by default: the custom metric needs prometheus-adapter, which a bare cluster lacks.
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": values["targetCPUUtilizationPercentage"]},
            },
        }
    ]
    assert "replicas" not in rendering.deployment()["spec"], "the HPA owns the replica count"
    assert rendering.container()["resources"]["requests"]["cpu"], "utilization is a share of the CPU request"
    off = chart_renderings[GRPC_OFF]
    assert off.of_kind("HorizontalPodAutoscaler") == []
    assert off.deployment()["spec"]["replicas"] == merged_values(off)["replicaCount"]


# --- NOTES, skaffold, dev cluster -----------------------------------------------------------------------------


def notes(helm_bin: Path, tmp_path: Path, *args: str | Path) -> str:
    result = run_ok(
        [helm_bin, "install", "rtserve", CHART, "--namespace", NAMESPACE, "--dry-run=client", *args],
        env={"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    return result.split("NOTES:", 1)[1]


def test_notes_show_grpcurl_when_grpc_is_on(helm_bin: Path, tmp_path: Path) -> None:
    on = notes(helm_bin, tmp_path, "--values", K8S / "values-dev.yaml")
    assert "kubectl -n rtserve port-forward svc/rtserve 8081:8081" in on
    assert "grpcurl -plaintext localhost:8081 list" in on
    assert "dns:///rtserve-grpc.rtserve.svc.cluster.local:8081" in on  # the dev values add the headless Service
    off = notes(helm_bin, tmp_path, "--values", CHART / "ci" / "grpc-off-values.yaml")
    assert "grpcurl" not in off and "8081" not in off
    routed = notes(helm_bin, tmp_path, "--values", CHART / "ci" / "grpc-values.yaml")
    assert "port-forward svc/rtserve 9500:9000" in routed
    assert "grpcurl grpc.rtserve.example.com:443 list" in routed


def test_skaffold_and_dev_cluster_forward_the_grpc_port(chart_renderings: dict[str, Rendering]) -> None:
    config = load_all((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))[0]
    forwarded = {(pf["resourceName"], pf["port"]): pf for pf in config["portForward"]}
    rendering = chart_renderings[DEV]
    service = rendering.service()
    grpc_port = port_named(service["spec"]["ports"], "grpc")
    assert grpc_port is not None, "the dev cluster serves gRPC"
    forward = forwarded[(service["metadata"]["name"], grpc_port["port"])]
    assert forward["resourceType"] == "service" and forward["namespace"] == NAMESPACE
    assert forward["localPort"] == grpc_port["port"]
    assert any(s["spec"].get("clusterIP") == "None" for s in rendering.of_kind("Service")), "dev: headless on"


def test_custom_ports_render_consistently(helm_bin: Path) -> None:
    """grpc.port and service.grpcPort move independently; everything that names the port follows."""
    rendering = helm_template(
        helm_bin,
        [],
        *MINIMAL,
        "--set",
        "grpc.port=9100",
        "--set",
        "service.grpcPort=50051",
        "--set",
        "grpc.headlessService.enabled=true",
    )
    assert rendering.config()["RTSERVE_GRPC_PORT"] == "9100"
    assert port_named(rendering.container()["ports"], "grpc") == {
        "name": "grpc",
        "containerPort": 9100,
        "protocol": "TCP",
    }
    for service in rendering.of_kind("Service"):
        port = port_named(service["spec"]["ports"], "grpc")
        assert port is not None and (port["port"], port["targetPort"]) == (50051, "grpc")
