"""The chart and the app agree: every RTSERVE_* variable the chart (or the image, or k8s/) sets is a Settings
field that accepts the value; every metric the dashboard, the alerts and the adapter rules name is defined in
service/observability/metrics.py and exported by a running server; the probe paths and ports answer as the chart
expects; the gRPC port the chart opens is the one the server listens on, and grpc.health.v1 answers SERVING only when
ready (nothing listens with gRPC off); the `helm test` script passes against a real server; SIGTERM turns the server
unready (HTTP and gRPC health) and it exits 0 in time.

The live tests start the real server (`rtserve serve`) on loopback with the environment the chart's ConfigMap
gives it (k8s/values-dev.yaml), on the demo model written by `rtserve demo-model`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apptools import free_port
from kube_support import (
    CHART,
    K8S,
    NAMESPACE,
    ROOT,
    Manifest,
    Rendering,
    adapter_metric_names,
    dashboard_expressions,
    exposed_series_names,
    load_all,
    load_one,
    metric_names_in,
    scenario_files,
    scenario_name,
    settings_env_names,
)
from service.observability.metrics import Metrics
from service.settings import Settings

SCENARIOS = [scenario_name(path) for path in scenario_files()]
LIVE_SCENARIO = "k8s/values-dev"
GRPC_OFF_SCENARIO = "ci/grpc-off-values"
SETTINGS_ENV = settings_env_names(Settings)
READY_TIMEOUT_S = 240.0


# --- Environment names ----------------------------------------------------------------------------------------


def test_settings_enumeration_sees_nested_fields() -> None:
    """Control for the checks below: the enumeration reaches nested models and rejects what is not there."""
    assert {
        "RTSERVE_REPOSITORY",
        "RTSERVE_PORT",
        "RTSERVE_S3__ENDPOINT_URL",
        "RTSERVE_TENSORFLOW__INTRA_OP_THREADS",
    } <= SETTINGS_ENV
    assert "RTSERVE_S3__ENDPOINT" not in SETTINGS_ENV
    assert "RTSERVE_TENSORFLOW_INTRA_OP_THREADS" not in SETTINGS_ENV


def rtserve_env_names(objects: list[Manifest]) -> dict[str, set[str]]:
    """RTSERVE_* names per object: ConfigMap data keys and container env entries."""
    found: dict[str, set[str]] = {}
    for obj in objects:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        names: set[str] = set()
        if obj["kind"] == "ConfigMap":
            names |= set(obj.get("data", {}))
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec) if obj["kind"] != "Pod" else spec
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            names |= {env["name"] for env in container.get("env", [])}
        rtserve = {name for name in names if name.startswith("RTSERVE_")}
        if rtserve:
            found[label] = rtserve
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_env_names_are_settings_fields(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    found = rtserve_env_names(chart_renderings[scenario].objects)
    assert found, "the chart sets no RTSERVE_* variable?"
    unknown = {label: sorted(names - SETTINGS_ENV) for label, names in found.items() if names - SETTINGS_ENV}
    assert unknown == {}, f"not fields of service.settings.Settings: {unknown}"


def test_dev_cluster_and_image_env_names_are_settings_fields(k8s_objects: list[Manifest]) -> None:
    found = rtserve_env_names(k8s_objects)
    assert any(label.startswith("Job/") for label in found)
    unknown = {label: sorted(names - SETTINGS_ENV) for label, names in found.items() if names - SETTINGS_ENV}
    assert unknown == {}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    image_env = {word.split("=")[0] for word in dockerfile.split() if word.startswith("RTSERVE_") and "=" in word}
    assert image_env and image_env <= SETTINGS_ENV, image_env - SETTINGS_ENV


def expected_setting(settings: Settings, name: str) -> Any:
    value: Any = settings
    for part in name.removeprefix("RTSERVE_").lower().split("__"):
        value = getattr(value, part)
    return value


def same_value(raw: str, parsed: Any) -> bool:
    if isinstance(parsed, bool):
        return raw.lower() in {"1", "true", "yes", "on"} if parsed else raw.lower() in {"0", "false", "no", "off"}
    if isinstance(parsed, int | float):
        return float(raw) == float(parsed)
    if isinstance(parsed, list):
        return [part.strip() for part in raw.split(",")] == parsed
    if isinstance(parsed, dict):
        return bool(json.loads(raw) == parsed)
    return bool(raw == parsed)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_settings_accept_the_chart_config(
    chart_renderings: dict[str, Rendering], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings built from exactly the chart's ConfigMap take every value as the chart meant it."""
    for name in list(os.environ):
        if name.startswith("RTSERVE_"):
            monkeypatch.delenv(name)
    config = chart_renderings[scenario].config()
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    wrong = {
        name: (value, expected_setting(settings, name))
        for name, value in config.items()
        if not same_value(value, expected_setting(settings, name))
    }
    assert wrong == {}, f"set by the chart -> read by Settings: {wrong}"


# --- Metric names ---------------------------------------------------------------------------------------------


def defined_series() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    return exposed_series_names(text_string_to_metric_families(generate_latest(registry).decode()))


def referenced_metrics(chart_renderings: dict[str, Rendering]) -> dict[str, set[str]]:
    """rtserve_* names per place that queries them: dashboard, alert rules, adapter rules, HPA."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text(encoding="utf-8"))
    rules = chart_renderings["ci/monitoring-values"].one("PrometheusRule")
    adapter = load_one(K8S / "prometheus-adapter" / "config.yaml")
    hpa = chart_renderings["ci/autoscaling-values"].one("HorizontalPodAutoscaler")
    return {
        "dashboard": {name for expr in dashboard_expressions(dashboard) for name in metric_names_in(expr)},
        "alert rules": {
            name
            for group in rules["spec"]["groups"]
            for rule in group["rules"]
            for name in metric_names_in(rule["expr"])
        },
        "adapter rules": {name for rule in adapter["rules"] for name in metric_names_in(rule["seriesQuery"])},
        "HPA": {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"},
    }


def test_metric_references_are_defined_in_service_metrics(chart_renderings: dict[str, Rendering]) -> None:
    defined = defined_series()
    assert "rtserve_inflight_requests" in defined and "rtserve_request_duration_seconds_bucket" in defined
    references = referenced_metrics(chart_renderings)
    for place, names in references.items():
        assert names, f"no rtserve metric found in the {place}"
    undefined = {place: sorted(names - defined) for place, names in references.items() if names - defined}
    assert undefined == {}, f"not defined by service/observability/metrics.py: {undefined}"


def test_hpa_metric_is_served_by_the_adapter(chart_renderings: dict[str, Rendering]) -> None:
    adapter = load_one(K8S / "prometheus-adapter" / "config.yaml")
    references = referenced_metrics(chart_renderings)
    assert references["HPA"] <= adapter_metric_names(adapter)
    for rule in adapter["rules"]:
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_dev_prometheus_labels_what_the_adapter_and_alerts_group_by() -> None:
    config = load_one(K8S / "prometheus" / "prometheus.yml")
    targets = {
        relabel.get("target_label") for job in config["scrape_configs"] for relabel in job.get("relabel_configs", [])
    }
    assert {"namespace", "pod", "__metrics_path__", "__address__"} <= targets


# --- The live server ------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, body: Any = None, timeout: float = 10) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Answer(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def status_or_none(url: str) -> int | None:
    try:
        return http(url, timeout=2).status
    except OSError:
        return None


class Server:
    """`rtserve serve` as a subprocess, its output in a log file."""

    def __init__(self, repository: Path, env: dict[str, str], workdir: Path) -> None:
        executable = Path(sys.executable).with_name("rtserve")
        if not executable.exists():
            pytest.fail(
                f"{executable} is missing: install the project into the venv (pip install -e '.[dev]')", pytrace=False
            )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Like the HTTP port, the chart's gRPC port moves to a free one on loopback; "0" (gRPC off) stays off.
        self.grpc_port = 0 if env.get("RTSERVE_GRPC_PORT") == "0" else free_port()
        self.log = workdir / f"server-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RTSERVE_")},
            **env,
            "RTSERVE_HOST": "127.0.0.1",
            "RTSERVE_PORT": str(self.port),
            "RTSERVE_GRPC_PORT": str(self.grpc_port),
            "RTSERVE_CACHE_DIR": str(workdir / f"cache-{self.port}"),
            "RTSERVE_REPOSITORY": str(repository),
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(executable), "serve", "--repository", str(repository), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=workdir,
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited ({self.process.returncode}) before {what}:\n{self.output()}")
            if condition():
                return
            time.sleep(0.25)
        pytest.fail(f"server not {what} within {timeout:.0f}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def demo_repository(workdir: Path) -> Path:
    repository = workdir / "models"
    executable = Path(sys.executable).with_name("rtserve")
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project into the venv", pytrace=False)
    result = subprocess.run(
        [str(executable), "demo-model", str(repository / "iris")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"rtserve demo-model failed:\n{result.stdout}\n{result.stderr}"
    assert (repository / "iris" / "1" / "saved_model.pb").is_file()
    return repository


@pytest.fixture(scope="module")
def live_rendering(chart_renderings: dict[str, Rendering]) -> Rendering:
    return chart_renderings[LIVE_SCENARIO]


@pytest.fixture(scope="module")
def server(live_rendering: Rendering, demo_repository: Path, workdir: Path) -> Iterator[Server]:
    """The live tests' shared server; none of them stops it (the SIGTERM test has its own)."""
    with chart_server(live_rendering, demo_repository, workdir) as process:
        yield process


@pytest.fixture
def own_server(live_rendering: Rendering, demo_repository: Path, workdir: Path) -> Iterator[Server]:
    """A server for one test alone, for a test that ends it."""
    with chart_server(live_rendering, demo_repository, workdir) as process:
        yield process


@contextmanager
def chart_server(live_rendering: Rendering, demo_repository: Path, workdir: Path) -> Iterator[Server]:
    """The server with the chart's ConfigMap as its environment (loopback, a free port and a local repository
    replace the in-cluster values), waited on until /v2/health/ready answers 200."""
    config = dict(live_rendering.config())
    # Long enough to watch the server answer not-ready after SIGTERM (test_sigterm_...); the chart's own value
    # is checked by test_settings_accept_the_chart_config.
    config["RTSERVE_SHUTDOWN_DELAY_S"] = "2"
    process = Server(demo_repository, config, workdir)
    try:
        process.wait_for("ready", lambda: status_or_none(f"{process.base}/v2/health/ready") == 200)
        yield process
    finally:
        process.stop()


def resolve_port(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))


def test_probe_ports_are_the_server_port(live_rendering: Rendering) -> None:
    container = live_rendering.container()
    config = live_rendering.config()
    service = live_rendering.service()["spec"]["ports"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert resolve_port(container, container[probe]["httpGet"]["port"]) == int(config["RTSERVE_PORT"])
    assert resolve_port(container, service["targetPort"]) == int(config["RTSERVE_PORT"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grpc_ports_resolve_to_the_grpc_setting(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    """The container's gRPC port is RTSERVE_GRPC_PORT, and every Service port that forwards gRPC lands on it."""
    rendering = chart_renderings[scenario]
    container = rendering.container()
    grpc_port = int(rendering.config()["RTSERVE_GRPC_PORT"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    if grpc_port == 0:
        assert "grpc" not in named and set(named.values()) == {int(rendering.config()["RTSERVE_PORT"])}
        return
    assert named["grpc"] == grpc_port
    forwarding = [
        port for service in rendering.of_kind("Service") for port in service["spec"]["ports"] if port["name"] == "grpc"
    ]
    assert forwarding, "no Service forwards gRPC"
    assert {resolve_port(container, port["targetPort"]) for port in forwarding} == {grpc_port}


def health_status(port: int, timeout: float = 5, service: str = "") -> int | None:
    """grpc.health.v1.Health/Check (of the whole server by default) through grpc's own health client; None when
    nothing answers (refused, or no HTTP/2 server there)."""
    request = health_pb2.HealthCheckRequest(service=service)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            raise
    status: int = answer.status
    return status


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on: its socket inodes (/proc/<pid>/fd) matched against the LISTEN rows of
    /proc/net/tcp and tcp6 (Linux only, as the tests' server)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_grpc_health_serves_on_the_chart_port_once_ready(live_rendering: Rendering, server: Server) -> None:
    """The server started with the chart's ConfigMap listens on exactly the HTTP and gRPC ports the chart opens
    (moved to free loopback ports), and grpc.health.v1 answers SERVING once /v2/health/ready does."""
    assert int(live_rendering.config()["RTSERVE_GRPC_PORT"]) == resolve_port(live_rendering.container(), "grpc")
    server.wait_for(
        "SERVING over gRPC", lambda: health_status(server.grpc_port) == health_pb2.HealthCheckResponse.SERVING, 30
    )
    assert listening_ports(server.process.pid) == {server.port, server.grpc_port}


def test_native_grpc_probe_passes_on_a_ready_server(chart_renderings: dict[str, Rendering], server: Server) -> None:
    """probes.grpc (ci/grpc-values): the kubelet checks the service the probe names on the gRPC port; that
    check, on a ready server with the chart's config, answers SERVING. (Probes do not change the ConfigMap, so the
    shared server stands for the pod; its gRPC port is moved to a free one as in the other live tests.)"""
    rendering = chart_renderings["ci/grpc-values"]
    for probe in ("startupProbe", "readinessProbe"):
        check = rendering.container()[probe]["grpc"]
        assert check["port"] == int(rendering.config()["RTSERVE_GRPC_PORT"])
        assert health_status(server.grpc_port, service=check["service"]) == health_pb2.HealthCheckResponse.SERVING


def test_with_grpc_off_nothing_listens_but_http(
    chart_renderings: dict[str, Rendering], demo_repository: Path, workdir: Path
) -> None:
    rendering = chart_renderings[GRPC_OFF_SCENARIO]
    config = dict(rendering.config())
    assert config["RTSERVE_GRPC_PORT"] == "0"
    process = Server(demo_repository, config, workdir)
    try:
        process.wait_for("ready", lambda: status_or_none(f"{process.base}/v2/health/ready") == 200)
        assert process.env["RTSERVE_GRPC_PORT"] == "0"
        assert listening_ports(process.process.pid) == {process.port}
        assert "gRPC listening" not in process.output()
    finally:
        process.stop()


def test_probe_paths_answer_200_on_a_ready_server(live_rendering: Rendering, server: Server) -> None:
    container = live_rendering.container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        answer = http(f"{server.base}{path}")
        assert answer.status == 200, f"{probe} {path} answered {answer.status}: {answer.body[:300]!r}"


def test_metrics_named_by_the_chart_are_exported(chart_renderings: dict[str, Rendering], server: Server) -> None:
    predict = http(f"{server.base}/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert predict.status == 200, predict.body
    infer = http(
        f"{server.base}/v2/models/iris/infer",
        {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]},
    )
    assert infer.status == 200, infer.body
    scrape = http(f"{server.base}/metrics")
    assert scrape.status == 200
    families = list(text_string_to_metric_families(scrape.body.decode()))
    exported = exposed_series_names(families)
    missing = {
        place: sorted(names - exported)
        for place, names in referenced_metrics(chart_renderings).items()
        if names - exported
    }
    assert missing == {}, f"queried but not exported by /metrics: {missing}"
    # The HPA's custom metric must have real series (the adapter discovers series, not declarations).
    inflight = [s for f in families for s in f.samples if s.name == "rtserve_inflight_requests"]
    assert inflight and all("protocol" in sample.labels for sample in inflight)


def helm_test_env(rendering: Rendering) -> dict[str, str]:
    return {item["name"]: item["value"] for item in rendering.test_pod()["spec"]["containers"][0]["env"]}


def run_helm_test(rendering: Rendering, base: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """The chart's `helm test` script, run here against ``base`` with the pod's environment (plus overrides)."""
    command = [
        sys.executable if part == "python" else part
        for part in rendering.test_pod()["spec"]["containers"][0]["command"]
    ]
    env = {**os.environ, **helm_test_env(rendering), "TARGET_URL": base, **overrides}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_helm_test_script_passes_against_the_server(live_rendering: Rendering, server: Server) -> None:
    service = live_rendering.service()
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert helm_test_env(live_rendering)["GRPC_TARGET"] == f"{service['metadata']['name']}.{NAMESPACE}.svc:{grpc_port}"
    grpc_target = f"127.0.0.1:{server.grpc_port}"
    result = run_helm_test(live_rendering, server.base, GRPC_TARGET=grpc_target)
    assert result.returncode == 0, f"helm test script failed:\n{result.stdout}\n{result.stderr}"
    assert "/v2/health/ready: 200" in result.stdout
    assert f"{helm_test_env(live_rendering)['TEST_MODEL']} version 1 predicted" in result.stdout
    assert f"{grpc_target} grpc.health.v1 Check: SERVING" in result.stdout
    # Control: the script fails when nothing serves gRPC at its target.
    refused = run_helm_test(live_rendering, server.base, GRPC_TARGET=f"127.0.0.1:{free_port()}")
    assert refused.returncode != 0 and "UNAVAILABLE" in refused.stderr, refused.stderr


def test_not_ready_without_models_while_alive(live_rendering: Rendering, workdir: Path) -> None:
    """A pod whose configured model has no version answers liveness but not readiness (zero models is not
    ready), so the startup and readiness probes hold it out of the Service; then SIGTERM exits 0 in time."""
    empty = workdir / "empty-repository"
    empty.mkdir(exist_ok=True)
    process = Server(empty, dict(live_rendering.config()), workdir)
    try:
        process.wait_for("live", lambda: status_or_none(f"{process.base}/v2/health/live") == 200)
        for _ in range(8):
            status = status_or_none(f"{process.base}/v2/health/ready")
            assert status is not None and not 200 <= status < 300, f"ready answered {status} with no model"
            time.sleep(0.25)
        # gRPC health says the same: up and answering, NOT_SERVING.
        process.wait_for("answering gRPC health", lambda: health_status(process.grpc_port) is not None, 30)
        assert health_status(process.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        grace = live_rendering.deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=grace) == 0, process.output()
    finally:
        process.stop()


def test_sigterm_turns_unready_then_exits_zero(live_rendering: Rendering, own_server: Server) -> None:
    """Readiness fails at once after SIGTERM while the process still answers, and the process exits 0 within
    the grace period the chart computes (less the preStop sleep, which runs before the signal). It stops its
    server, so the server is its own: the other live tests run before or after it alike."""
    server = own_server
    assert status_or_none(f"{server.base}/v2/health/ready") == 200
    assert health_status(server.grpc_port) == health_pb2.HealthCheckResponse.SERVING
    pod = live_rendering.deployment()["spec"]["template"]["spec"]
    pre_stop = int(live_rendering.container()["lifecycle"]["preStop"]["exec"]["command"][1])
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    seen: list[int | None] = []
    grpc_seen: list[int | None] = []
    while time.monotonic() - started < 1.5:
        seen.append(status_or_none(f"{server.base}/v2/health/ready"))
        grpc_seen.append(health_status(server.grpc_port, timeout=1))
        time.sleep(0.1)
    assert seen and all(status is None or not 200 <= status < 300 for status in seen), seen
    assert any(status is not None for status in seen), "the server should keep answering during the delay"
    serving = health_pb2.HealthCheckResponse.SERVING
    assert grpc_seen and serving not in grpc_seen, f"gRPC health after SIGTERM: {grpc_seen}"
    assert health_pb2.HealthCheckResponse.NOT_SERVING in grpc_seen, "gRPC should answer NOT_SERVING in the delay"
    assert server.process.wait(timeout=pod["terminationGracePeriodSeconds"] - pre_stop) == 0, server.output()


def test_k8s_publish_job_uses_rtserve_push(k8s_objects: list[Manifest]) -> None:
    job = next(obj for obj in k8s_objects if obj["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    script = " ".join(container.get("command", []) + container.get("args", []))
    assert "rtserve demo-model /tmp/model" in script
    assert "rtserve push /tmp/model/1 --model iris" in script
    env = {item["name"]: item for item in container["env"]}
    assert env["RTSERVE_REPOSITORY"]["value"] == "s3://models"
    assert env["RTSERVE_S3__ENDPOINT_URL"]["value"].startswith("http://minio.")


def test_dev_values_point_at_the_dev_cluster(k8s_objects: list[Manifest]) -> None:
    """k8s/values-dev.yaml names the Secret and the MinIO endpoint that k8s/ provides; k8s/ ships the chart's
    dashboard with the label its Grafana sidecar watches."""
    values = load_one(K8S / "values-dev.yaml")
    secret = next(o for o in k8s_objects if o["kind"] == "Secret")
    s3 = values["repository"]["s3"]
    assert s3["existingSecret"] == secret["metadata"]["name"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    minio = next(o for o in k8s_objects if o["kind"] == "Service" and o["metadata"]["name"] == "minio")
    port = next(p["port"] for p in minio["spec"]["ports"] if p["name"] == "s3")
    assert s3["endpointUrl"] == f"http://minio.{minio['metadata']['namespace']}.svc:{port}"
    grafana = next(o for o in k8s_objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "grafana")
    sidecar = next(c for c in grafana["spec"]["template"]["spec"]["containers"] if c["name"] == "dashboard-sidecar")
    sidecar_env = {item["name"]: item["value"] for item in sidecar["env"]}
    chart_labels = load_one(CHART / "values.yaml")["metrics"]["dashboard"]["labels"]
    assert chart_labels == {sidecar_env["LABEL"]: sidecar_env["LABEL_VALUE"]}
    # k8s/ ships the chart's dashboard itself (so the chart's copy stays off here), labelled for the sidecar.
    assert values["metrics"]["dashboard"]["enabled"] is False
    dashboards = [o for o in k8s_objects if o["kind"] == "ConfigMap" and "rtserve.json" in o.get("data", {})]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"][sidecar_env["LABEL"]] == sidecar_env["LABEL_VALUE"]
    chart_dashboard = json.loads((CHART / "files" / "dashboard.json").read_text(encoding="utf-8"))
    assert json.loads(dashboards[0]["data"]["rtserve.json"]) == chart_dashboard
    namespaces = load_all((K8S / "namespace.yaml").read_text(encoding="utf-8"))
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- API keys from a Secret (auth.existingSecret) ---------------------------------------------------------------

AUTH_SCENARIO = "ci/ingress-netpol-values"


def test_the_keys_file_setting_names_the_mounted_secret_key(chart_renderings: dict[str, Rendering]) -> None:
    rendering = chart_renderings[AUTH_SCENARIO]
    keys_file = Path(rendering.config()["RTSERVE_AUTH__KEYS_FILE"])
    for pod_spec in (rendering.deployment()["spec"]["template"]["spec"], rendering.test_pod()["spec"]):
        volume = next(v for v in pod_spec["volumes"] if v["name"] == "api-keys")
        mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
        assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never see a rotated Secret
        assert Path(mount["mountPath"]) / volume["secret"]["items"][0]["path"] == keys_file
    assert "RTSERVE_AUTH__KEYS_FILE" not in chart_renderings[LIVE_SCENARIO].config()  # off unless asked for


def test_with_api_keys_probes_and_scrapes_answer_and_the_helm_test_sends_a_key(
    chart_renderings: dict[str, Rendering], demo_repository: Path, workdir: Path
) -> None:
    rendering = chart_renderings[AUTH_SCENARIO]
    config = dict(rendering.config())
    keys = workdir / "api-keys" / Path(config["RTSERVE_AUTH__KEYS_FILE"]).name
    keys.parent.mkdir(exist_ok=True)
    keys.write_text("# rotated 2026-11\nfirst-key\nsecond-key\n", encoding="utf-8")
    config["RTSERVE_AUTH__KEYS_FILE"] = str(keys)
    process = Server(demo_repository, config, workdir)
    try:
        # The probes and Prometheus carry no key: readiness and /metrics must answer without one.
        process.wait_for("ready", lambda: status_or_none(f"{process.base}/v2/health/ready") == 200)
        assert http(f"{process.base}/metrics").status == 200
        grpc_target = f"127.0.0.1:{process.grpc_port}"
        passed = run_helm_test(rendering, process.base, API_KEYS_FILE=str(keys), GRPC_TARGET=grpc_target)
        assert passed.returncode == 0, f"helm test script failed:\n{passed.stdout}\n{passed.stderr}"
        assert f"{helm_test_env(rendering)['TEST_MODEL']} version 1 predicted" in passed.stdout
        # gRPC health needs no key either (grpc.authExemptHealth), as the kubelet's gRPC probe sends none.
        assert f"{grpc_target} grpc.health.v1 Check: SERVING" in passed.stdout
        # The same script without a key: the server must refuse it.
        refused = run_helm_test(rendering, process.base, API_KEYS_FILE="")
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    finally:
        process.stop()
