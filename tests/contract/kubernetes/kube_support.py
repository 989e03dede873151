"""Helpers for the Kubernetes delivery tests: finding the tools, rendering the chart, reading YAML strictly,
and pulling metric and setting names out of the artefacts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import GenericAlias
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel

from prerequisites import unavailable as prerequisite_missing

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "rtserve"
K8S = ROOT / "k8s"
TOOLS_BIN = ROOT / ".tools" / "bin"
RELEASE = "rtserve"
NAMESPACE = "rtserve"

Manifest = dict[str, Any]


# How to get each tool when it is missing.
INSTALL_HINTS = {"promtool": "apt-get install prometheus (Debian's package ships promtool)"}


def unavailable(reason: str, fix: str = "make tools") -> NoReturn:
    """A missing tool: a failure in CI (where .ci/run must have installed it), a skip elsewhere."""
    prerequisite_missing(reason, f"run `{fix}`")


def find_tool(name: str) -> Path:
    """The tool from .tools/bin (put there by `make tools`), else from PATH."""
    local = TOOLS_BIN / name
    if local.exists() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not in {TOOLS_BIN} nor on PATH", INSTALL_HINTS.get(name, "make tools"))
    return Path(found)


def run(
    command: Sequence[str | Path],
    *,
    timeout: float = 120,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        check=False,
    )


def run_ok(command: Sequence[str | Path], **kwargs: Any) -> str:
    result = run(command, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_all(text: str) -> list[Manifest]:
    """Every non-empty document of a multi-document YAML stream, duplicate keys refused."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]


def load_one(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)


@dataclass
class Rendering:
    """One `helm template` run: its values files, its text, and its objects."""

    name: str
    values_files: list[Path]
    text: str
    objects: list[Manifest] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> Manifest:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}"
        return found[0]

    def deployment(self) -> Manifest:
        return self.one("Deployment")

    def service(self) -> Manifest:
        """The server's Service (named like the Deployment); the gRPC headless Service is `<name>-grpc`."""
        name = self.deployment()["metadata"]["name"]
        found = [s for s in self.of_kind("Service") if s["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one Service named {name}"
        return found[0]

    def container(self) -> Manifest:
        containers: list[Manifest] = self.deployment()["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "rtserve")

    def config(self) -> dict[str, str]:
        configmaps = [c for c in self.of_kind("ConfigMap") if "RTSERVE_REPOSITORY" in c.get("data", {})]
        assert len(configmaps) == 1, f"{self.name}: expected one ConfigMap of RTSERVE_* variables"
        data: dict[str, str] = configmaps[0]["data"]
        return data

    def test_pod(self) -> Manifest:
        pods = [p for p in self.of_kind("Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        assert len(pods) == 1, f"{self.name}: expected one helm test pod"
        return pods[0]


def helm_template(
    helm: Path, values_files: Iterable[Path], *extra: str, name: str = "custom", release: str = RELEASE
) -> Rendering:
    files = list(values_files)
    command: list[str | Path] = [helm, "template", release, CHART, "--namespace", NAMESPACE]
    for path in files:
        command += ["--values", path]
    command += list(extra)
    text = run_ok(command)
    return Rendering(name=name, values_files=files, text=text, objects=load_all(text))


# --- Values ----------------------------------------------------------------------------------------------------


def merged_values(rendering: Rendering) -> dict[str, Any]:
    """values.yaml overlaid with the scenario's values files (maps merge, everything else replaces)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    values: dict[str, Any] = load_one(CHART / "values.yaml")
    for path in rendering.values_files:
        values = merge(values, load_one(path) or {})
    return values


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def nginx_size_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert match, f"not an nginx size: {size!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


def scenario_files() -> list[Path]:
    """The chart's CI scenarios plus the development cluster's values."""
    return [*sorted((CHART / "ci").glob("*.yaml")), K8S / "values-dev.yaml"]


def scenario_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


# --- Kubernetes versions --------------------------------------------------------------------------------------

_CONSTRAINT = re.compile(r"^(>=|>|<=|<|=)?\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:-[0-9A-Za-z.-]+)?$")


def version_satisfies(version: tuple[int, int], constraint: str) -> bool:
    """Whether Kubernetes major.minor satisfies a Chart.yaml kubeVersion made of comparisons joined by spaces or
    commas (all must hold), e.g. ">=1.29.0-0" or ">= 1.29.0-0 < 1.38.0-0"."""
    tokens = re.findall(r"(?:>=|<=|>|<|=)?\s*v?\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?", constraint)
    assert tokens, f"cannot read kubeVersion {constraint!r}"
    for token in tokens:
        match = _CONSTRAINT.match(token.strip())
        assert match, f"cannot read kubeVersion term {token!r}"
        op, major, minor = match.group(1) or "=", int(match.group(2)), int(match.group(3))
        bound = (major, minor)
        holds = {
            ">=": version >= bound,
            ">": version > bound,
            "<=": version <= bound,
            "<": version < bound,
            "=": version == bound,
        }[op]
        if not holds:
            return False
    return True


# --- Settings ---------------------------------------------------------------------------------------------------


def settings_env_names(model: type[BaseModel], prefix: str = "RTSERVE_", delimiter: str = "__") -> set[str]:
    """Every environment variable a pydantic-settings class reads: one per field, and for fields that are
    themselves models, one per nested field (PREFIX + OUTER + delimiter + INNER), all upper case."""
    names: set[str] = set()
    for field_name, info in model.model_fields.items():
        env = f"{prefix}{field_name}".upper()
        names.add(env)
        annotation = info.annotation
        if (
            isinstance(annotation, type)
            and not isinstance(annotation, GenericAlias)
            and issubclass(annotation, BaseModel)
        ):
            names |= settings_env_names(annotation, prefix=f"{env}{delimiter}", delimiter=delimiter)
    return names


# --- Metric names ---------------------------------------------------------------------------------------------

_METRIC = re.compile(r"\brtserve_[a-z0-9_]+\b")


def metric_names_in(text: str) -> set[str]:
    """Every rtserve_* series name in PromQL (or anything else) text."""
    return set(_METRIC.findall(text))


def exposed_series_names(families: Iterable[Any]) -> set[str]:
    """Series names a Prometheus text exposition offers for its metric families (from
    prometheus_client.parser): counters as NAME_total, histograms as NAME_bucket/_sum/_count, gauges as NAME;
    prometheus_client's *_created series are left out (nothing should query them)."""
    names: set[str] = set()
    for family in families:
        if family.name.endswith("_created"):
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "summary":
            names |= {family.name, f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def dashboard_expressions(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets (rows' nested panels too) and query
    variables."""

    def panels(items: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield str(target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            yield str(query)


def adapter_metric_names(config: Mapping[str, Any]) -> set[str]:
    """The custom metric names prometheus-adapter serves for its rules (name.as, or the series name)."""
    served: set[str] = set()
    for rule in config.get("rules", []):
        series = metric_names_in(rule["seriesQuery"])
        assert len(series) == 1, f"adapter rule should select one rtserve series: {rule['seriesQuery']}"
        name = rule.get("name", {})
        served.add(name.get("as") or next(iter(series)))
    return served


# --- Pod Security Standard "restricted" -----------------------------------------------------------------------

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """Where a pod spec breaks the Pod Security Standard "restricted" (the rules the admission controller
    enforces in namespaces labelled pod-security.kubernetes.io/enforce=restricted)."""
    problems: list[str] = []
    pod_context = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    if pod_context.get("runAsUser") == 0:
        problems.append("pod runs as user 0")
    containers = list(spec.get("containers", [])) + list(spec.get("initContainers", []))
    for container in containers:
        name = container["name"]
        context = container.get("securityContext", {})
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runs as user 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile is {seccomp}")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: uses a hostPort")
    return problems


def pod_spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a Pod or of a workload's template, None for other kinds."""
    if obj["kind"] == "Pod":
        spec: Mapping[str, Any] = obj["spec"]
        return spec
    template = obj.get("spec", {}).get("template")
    return template["spec"] if template else None
