"""Real Prometheus (Debian's package) scraping two real rtserve processes under a bounded load, then every query
the project ships is evaluated through Prometheus' HTTP API and must return data of the expected shape: each
dashboard query (and variable), each recording rule, each alert expression and each prometheus-adapter rule.

The two servers play two pods of release ``rtserve`` in namespace ``rtserve``; Prometheus' scrape config gives
them the ``namespace`` and ``pod`` labels that Kubernetes discovery gives real pods. They are set up so that the
fleet is realistically unhealthy in a few ways: pod A serves iris version 1 (with a drift profile) and a model
"broken" whose version does not load; pod B serves iris version 2 and then loses its repository. So with the
shipped thresholds RtserveModelLoadFailed and RtserveDefaultVersionSkew fire for real and the other alerts stay
quiet; with tripwire thresholds (each at the value that makes any signal fire) every alert returns its series with
the labels its annotations use.

The dashboard's HPA lines read kube-state-metrics, which is not running here: a loopback stand-in serves those
three kube-state-metrics series (names and labels as kube-state-metrics documents them) so that the queries and
their joins are evaluated for real; that kube-state-metrics emits them is taken from its documentation, not proven.

Last, drifted inputs are sent to pod A: the PSI of the drifted features and the drift alert's expression cross the
threshold while the undrifted features stay below it.
"""

from __future__ import annotations

import csv
import http.server
import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from apptools import REPO_ROOT, ServerProcess, free_port, running_server, wait_until
from modelfactory import GARBAGE
from service.repository.local import LocalRepository
from service.tools.push import push_version

pytestmark = pytest.mark.integration

NAMESPACE = "rtserve"
PODS = ("rtserve-5d9f8b7c6-aaaaa", "rtserve-5d9f8b7c6-bbbbb")
CHART = REPO_ROOT / "helm" / "rtserve"
RULES = REPO_ROOT / "k8s" / "prometheus" / "rtserve-rules.yml"
DASHBOARD = CHART / "files" / "dashboard.json"
ADAPTER = REPO_ROOT / "k8s" / "prometheus-adapter" / "config.yaml"
IRIS = REPO_ROOT / "service" / "tools" / "data" / "iris.csv"
LOAD_SECONDS = 10.0
# Grafana's variables as the dashboard's default ("All") view has them; $__rate_interval wide enough to cover the
# whole short life of this Prometheus, so that every rate has samples.
GRAFANA = {"$__rate_interval": "5m", "$namespace": NAMESPACE, "$model": ".*"}
# Thresholds at which any signal fires: an objective of 1 leaves no budget, one ready pod too few, and so on.
TRIPWIRE = {
    "metrics.prometheusRule.availabilityObjective": "1",
    "metrics.prometheusRule.latency.objective": "1",
    "metrics.prometheusRule.minReadyReplicas": "3",
    "metrics.prometheusRule.repositoryStaleSeconds": "0",
    "metrics.prometheusRule.queueSaturationRatio": "0",
    "metrics.prometheusRule.driftPsi": "0",
}
# What fires with the shipped thresholds in this fleet (everything else must stay quiet).
FIRING_BY_DEFAULT = {"RtserveModelLoadFailed": {"broken"}, "RtserveDefaultVersionSkew": {"iris"}}
KUBE_STATE_METRICS = f"""\
kube_horizontalpodautoscaler_spec_target_metric{{namespace="{NAMESPACE}",horizontalpodautoscaler="rtserve",\
metric_name="rtserve_inflight_requests",metric_target_type="average"}} 4
kube_horizontalpodautoscaler_status_desired_replicas{{namespace="{NAMESPACE}",horizontalpodautoscaler="rtserve"}} 2
kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{NAMESPACE}",horizontalpodautoscaler="rtserve"}} 6
"""


# -- the fleet ------------------------------------------------------------------------------------------------


def iris_rows() -> list[list[float]]:
    with IRIS.open(encoding="utf-8") as handle:
        return [[float(value) for value in row[:4]] for row in list(csv.reader(handle))[1:] if row]


@dataclass
class Fleet:
    a: ServerProcess
    b: ServerProcess
    b_repository: Path


def publish_iris(root: Path, model_dir: Path, profile: Path, versions: tuple[int, ...]) -> None:
    repository = LocalRepository(root)
    for version in versions:
        push_version(repository, model_dir, "iris", version, profile_data=profile)


def server_environment(name: str, repository: Path, workdir: Path) -> dict[str, str]:
    return {
        "RTSERVE_REPOSITORY": str(repository),
        "RTSERVE_CACHE_DIR": str(workdir / f"cache-{name}"),
        "RTSERVE_POLL_INTERVAL_S": "0.5",
        "RTSERVE_POLL_MAX_BACKOFF_S": "1",
        "RTSERVE_DRIFT__WINDOW_SIZE": "500",
        "RTSERVE_DRIFT__MIN_SAMPLES": "50",
        "RTSERVE_TENSORFLOW__INTRA_OP_THREADS": "1",
        "RTSERVE_TENSORFLOW__INTER_OP_THREADS": "1",
    }


@pytest.fixture(scope="module")
def fleet(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    profile = workdir / "iris-training.csv"
    profile.write_text("\n".join(",".join(map(str, row)) for row in iris_rows()) + "\n", encoding="utf-8")
    repo_a, repo_b = workdir / "repository-a", workdir / "repository-b"
    publish_iris(repo_a, demo_model_dir, profile, (1,))
    publish_iris(repo_b, demo_model_dir, profile, (1, 2))
    broken = repo_a / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(GARBAGE)
    with ExitStack() as servers:
        a, b = (
            servers.enter_context(
                running_server(
                    server_environment(name, repository, workdir),
                    workdir,
                    ready_timeout_s=120,
                    log_name=f"rtserve-{name}.log",
                )
            )
            for name, repository in (("a", repo_a), ("b", repo_b))
        )
        yield Fleet(a, b, repo_b)


# -- Prometheus and the kube-state-metrics stand-in -----------------------------------------------------------


class _Exposition(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = KUBE_STATE_METRICS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


class Prometheus:
    """/usr/bin/prometheus on a loopback port with a generated config and a temporary storage folder."""

    def __init__(self, workdir: Path, targets: dict[str, int], kube_state_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shutil.copy(RULES, workdir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {
                    "job_name": "rtserve-pods",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
                        for pod, port in targets.items()
                    ],
                },
                {
                    "job_name": "kube-state-metrics",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{kube_state_port}"]}],
                },
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: apt-get install prometheus (.ci/run does)", pytrace=False)
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        wait_until(self._ready, 30, 0.2, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.process.returncode})")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10).json()
        assert answer["status"] == "success", f"{expression}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def prometheus(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    exposition = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=exposition.serve_forever, daemon=True).start()
    targets = {PODS[0]: fleet.a.port, PODS[1]: fleet.b.port}
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), targets, exposition.server_address[1])
    try:
        yield server
    finally:
        server.stop()
        exposition.shutdown()


# -- load -----------------------------------------------------------------------------------------------------


def send(client: httpx.Client, server: ServerProcess, rows: list[list[float]], protocol: str) -> int:
    if protocol == "v2":
        flat = [value for row in rows for value in row]
        tensor = {"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}
        answer = client.post(f"{server.url}/v2/models/iris/infer", json={"inputs": [tensor]})
    else:
        answer = client.post(f"{server.url}/v1/models/iris:predict", json={"instances": rows})
    return answer.status_code


def undrifted_load(servers: list[ServerProcess], seconds: float, workers: int = 4) -> list[int]:
    """Training rows drawn at random, 1 to 8 per request, over both protocols; bounded in time."""
    rows = iris_rows()
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> list[int]:
        rng = random.Random(seed)
        statuses = []
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                server = servers[len(statuses) % len(servers)]
                batch = [rng.choice(rows) for _ in range(rng.randint(1, 8))]
                statuses.append(send(client, server, batch, rng.choice(("v2", "tfserving"))))
        return statuses

    with ThreadPoolExecutor(workers) as pool:
        return [status for result in pool.map(worker, range(workers)) for status in result]


@pytest.fixture(scope="module")
def loaded(fleet: Fleet, prometheus: Prometheus) -> Prometheus:
    """The fleet after the load: pod B's repository gone, and Prometheus holding what the queries need."""
    statuses = undrifted_load([fleet.a, fleet.b], LOAD_SECONDS / 2)
    shutil.rmtree(fleet.b_repository)  # pod B keeps serving; its polls now fail
    statuses += undrifted_load([fleet.a, fleet.b], LOAD_SECONDS / 2)
    assert statuses and set(statuses) == {200}
    wait_until(
        lambda: (
            prometheus.query("increase(rtserve_repository_poll_errors_total[1m]) > 0")
            and prometheus.query("rtserve:request_errors:ratio_rate5m")
            and prometheus.query("rtserve_drift_psi")
        ),
        30,
        0.5,
        "Prometheus to see the load, the drift scores and pod B's failing polls",
    )
    return prometheus


# -- expected shapes ------------------------------------------------------------------------------------------


def grafana_to_promql(expression: str) -> str:
    for variable, value in GRAFANA.items():
        expression = expression.replace(variable, value)
    label_values = re.fullmatch(r"label_values\((.+),\s*[a-z_]+\)", expression.strip())
    return label_values.group(1) if label_values else expression


def dashboard_targets() -> Iterator[tuple[str, str, set[str]]]:
    """(panel title, PromQL, labels its legend names) for every panel target and query variable."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            yield panel["title"], grafana_to_promql(target["expr"]), legend
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            label = re.search(r",\s*([a-z_]+)\)$", variable["query"]["query"])
            assert label is not None
            yield f"variable {variable['name']}", grafana_to_promql(variable["query"]["query"]), {label.group(1)}


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(item["value"][1])) for item in result)


def missing_labels(result: list[dict[str, Any]], labels: set[str]) -> list[dict[str, str]]:
    return [item["metric"] for item in result if not labels <= set(item["metric"])]


def rendered_alerts(*settings: str) -> dict[str, dict[str, Any]]:
    """The chart's alert rules for release rtserve in namespace rtserve (k8s/values-dev.yaml), plus ``settings``."""
    helm = REPO_ROOT / ".tools" / "bin" / "helm"
    command = [str(helm if helm.exists() else shutil.which("helm") or "helm"), "template", "rtserve", str(CHART)]
    command += ["--namespace", NAMESPACE, "--values", str(REPO_ROOT / "k8s" / "values-dev.yaml")]
    command += ["--set", "metrics.prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"]
    for setting in settings:
        command += ["--set", setting]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    groups = yaml.safe_load(result.stdout)["spec"]["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def annotation_labels(rule: dict[str, Any]) -> set[str]:
    return set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))


# -- the tests ------------------------------------------------------------------------------------------------


def test_prometheus_loads_the_shipped_rules_and_evaluates_them_cleanly(loaded: Prometheus) -> None:
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    names = {rule.get("alert") or rule.get("record") for group in shipped["groups"] for rule in group["rules"]}
    evaluated = loaded.rules()
    assert {rule["name"] for rule in evaluated} == names
    unhealthy = {rule["name"]: rule.get("lastError") for rule in evaluated if rule["health"] != "ok"}
    assert unhealthy == {}


def test_every_recording_rule_has_data_per_model(loaded: Prometheus) -> None:
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    records = [rule["record"] for group in shipped["groups"] for rule in group["rules"] if "record" in rule]
    for record in records:
        result = loaded.query(record)
        assert {item["metric"].get("model_name") for item in result} >= {"iris"}, record
        assert missing_labels(result, {"namespace", "model_name"}) == [], record
        assert finite(result), record


def test_every_dashboard_query_returns_data(loaded: Prometheus) -> None:
    problems = {}
    targets = list(dashboard_targets())
    assert len(targets) > 25
    for title, expression, legend in targets:
        result = loaded.query(expression)
        if not result or not finite(result) or missing_labels(result, legend):
            problems[f"{title}: {expression}"] = result[:3]
    assert problems == {}


def test_every_adapter_rule_serves_each_pod(loaded: Prometheus) -> None:
    adapter = yaml.safe_load(ADAPTER.read_text(encoding="utf-8"))
    for rule in adapter["rules"]:
        series = loaded.query(rule["seriesQuery"])
        assert series and missing_labels(series, {"namespace", "pod"}) == []
        name = rule["seriesQuery"].split("{")[0]
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", name)
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{PODS[0]}|{PODS[1]}"')
            .replace("<<.GroupBy>>", "pod")
        )
        result = loaded.query(query)
        assert sorted(item["metric"].get("pod") for item in result) == sorted(PODS), query
        assert finite(result)


def test_every_alert_returns_its_series_at_tripwire_thresholds(loaded: Prometheus) -> None:
    alerts = rendered_alerts(*(f"{key}={value}" for key, value in TRIPWIRE.items()))
    assert set(alerts) == set(rendered_alerts())
    for name, rule in alerts.items():
        result = loaded.query(rule["expr"])
        assert result, f"{name} returned nothing at tripwire thresholds:\n{rule['expr']}"
        assert missing_labels(result, annotation_labels(rule)) == [], name


def test_shipped_thresholds_fire_only_for_what_is_wrong(loaded: Prometheus) -> None:
    for name, rule in rendered_alerts().items():
        models = {item["metric"].get("model_name") for item in loaded.query(rule["expr"])}
        assert models == FIRING_BY_DEFAULT.get(name, set()), name


def test_drifted_inputs_cross_the_threshold_undrifted_stay_below(loaded: Prometheus, fleet: Fleet) -> None:
    psi = f'rtserve_drift_psi{{pod="{PODS[0]}", model_name="iris"}}'
    before = {item["metric"]["feature"]: float(item["value"][1]) for item in loaded.query(psi)}
    assert set(before) == {f"features[{i}]" for i in range(4)}
    assert max(before.values()) < 0.1, before
    drift_alert = rendered_alerts()["RtserveInputDrift"]["expr"]
    assert loaded.query(drift_alert) == []

    # Petal length and width (features 2 and 3) move far past anything in training; sepals stay as they were.
    rng = random.Random(7)
    rows = iris_rows()
    with httpx.Client(timeout=10) as client:
        for _ in range(40):
            batch = [rng.choice(rows) for _ in range(16)]
            drifted = [[a, b, c * 2 + 3, d * 2 + 2] for a, b, c, d in batch]
            assert send(client, fleet.a, drifted, rng.choice(("v2", "tfserving"))) == 200

    def drifted_features() -> set[str]:
        return {item["metric"]["feature"] for item in loaded.query(drift_alert)}

    def psi_now() -> dict[str, float]:
        return {item["metric"]["feature"]: float(item["value"][1]) for item in loaded.query(psi)}

    # The alert may fire on a scrape taken while the window was still turning over: wait for the scrape that
    # sees every drifted row (the window holds 500 rows, 640 were sent), then look at all four features.
    def window_turned_over() -> bool:
        now = psi_now()
        return min(now["features[2]"], now["features[3]"]) > 1.0

    wait_until(lambda: drifted_features() == {"features[2]", "features[3]"}, 20, 0.5, "the drift alert's expression")
    wait_until(window_turned_over, 20, 0.5, "PSI above 1 for the drifted features")
    assert drifted_features() == {"features[2]", "features[3]"}
    after = psi_now()
    assert after["features[0]"] < 0.1 and after["features[1]"] < 0.1, after
