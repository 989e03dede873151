"""What ``rtserve fleet status`` does: ask every replica which version it serves.

A replica is read through endpoints it already has, both exempt from API keys by default: ``/v2/health/ready`` and
``/metrics`` (the default, pending and blocked-rollout gauges, version states and load failures). The default
gauge is computed when scraped, so it shows the switch at ``activate_at`` to the second, not at the next poll.

Replicas come from ``--endpoints``, or from the Kubernetes API: the EndpointSlices of the rtserve Service, ready
or not, so that a replica failing its readiness probe still shows.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from service.errors import FailedPrecondition
from service.observability.metrics import (
    DEFAULT_VERSION,
    MODEL_LOADS,
    PENDING_DEFAULT_VERSION,
    ROLLOUT_BLOCKED,
    VERSION_STATE,
)
from service.states import VersionState

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ModelView:
    """One model as one replica reports it."""

    name: str
    default: int | None = None
    pending: int | None = None  # the version the default switches to at activate_at
    blocked: bool = False  # activate_at passed, the new default is not AVAILABLE here
    available: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()  # failed to load at least once and not AVAILABLE


@dataclass(frozen=True)
class ReplicaView:
    endpoint: str
    ready: bool | None = None
    models: Mapping[str, ModelView] = field(default_factory=dict)
    error: str | None = None  # why the replica could not be read


def endpoint_url(text: str) -> str:
    """``host:port`` or a URL, as a base URL without a trailing slash."""
    text = text.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


# -- reading one replica -------------------------------------------------------------------------------------


def models_from_metrics(text: str) -> dict[str, ModelView]:
    """Every model a replica's /metrics describes."""
    gauges: dict[str, dict[str, float]] = {}  # metric -> model -> value
    # model -> version -> state, as the replica wrote it (a replica of another release may know other states)
    states: dict[str, dict[int, str]] = {}
    failures: dict[str, set[int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model_name", "")
            if not model:
                continue
            if sample.name == VERSION_STATE and sample.value == 1.0:
                states.setdefault(model, {})[int(sample.labels["model_version"])] = sample.labels["state"]
            elif sample.name == MODEL_LOADS and sample.labels.get("outcome") == "failure":
                if sample.value > 0:
                    failures.setdefault(model, set()).add(int(sample.labels["model_version"]))
            elif sample.name in (DEFAULT_VERSION, PENDING_DEFAULT_VERSION, ROLLOUT_BLOCKED):
                gauges.setdefault(sample.name, {})[model] = sample.value
    names = set(states) | set(gauges.get(DEFAULT_VERSION, {}))
    return {name: _model_view(name, gauges, states.get(name, {}), failures.get(name, set())) for name in names}


def _model_view(
    name: str, gauges: Mapping[str, Mapping[str, float]], states: Mapping[int, str], failures: set[int]
) -> ModelView:
    def version(metric: str) -> int | None:
        value = gauges.get(metric, {}).get(name)
        return None if value is None or math.isnan(value) or value <= 0 else int(value)

    available = tuple(sorted(v for v, state in states.items() if state == VersionState.AVAILABLE))
    return ModelView(
        name=name,
        default=version(DEFAULT_VERSION),
        pending=version(PENDING_DEFAULT_VERSION),
        blocked=gauges.get(ROLLOUT_BLOCKED, {}).get(name, 0.0) == 1.0,
        available=available,
        failed=tuple(sorted(failures - set(available))),
    )


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:  # a 4xx/5xx still has a status worth reporting
        return error.code, error.read().decode("utf-8", "replace")


def query_replica(endpoint: str, timeout_s: float = 3.0) -> ReplicaView:
    try:
        ready_status, _ = _get(endpoint + "/v2/health/ready", timeout_s)
        metrics_status, text = _get(endpoint + "/metrics", timeout_s)
    except (OSError, ValueError) as error:
        return ReplicaView(endpoint, error=f"unreachable: {error}")
    if metrics_status != 200:
        return ReplicaView(endpoint, ready_status == 200, error=f"/metrics answered {metrics_status}")
    return ReplicaView(endpoint, ready_status == 200, models_from_metrics(text))


def fleet_status(endpoints: Sequence[str], timeout_s: float = 3.0) -> list[ReplicaView]:
    """Every replica's view, read concurrently so one slow replica costs one timeout, not one each."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        return list(pool.map(lambda e: query_replica(endpoint_url(e), timeout_s), endpoints))


# -- the report ----------------------------------------------------------------------------------------------


def _versions(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values) or "-"


def _row(replica: ReplicaView, model: ModelView | None) -> str:
    ready = {True: "yes", False: "no", None: "?"}[replica.ready]
    if model is None:
        return f"{replica.endpoint:<32} {ready:<5}  {replica.error or 'no models'}"
    pending = "-" if model.pending is None else f"{model.pending}{' BLOCKED' if model.blocked else ''}"
    default = "-" if model.default is None else str(model.default)
    return (
        f"{replica.endpoint:<32} {ready:<5}  {model.name:<16} {default:>7}  {pending:<11} "
        f"{_versions(model.available):<10} {_versions(model.failed)}"
    )


def render(replicas: Sequence[ReplicaView], only: str | None = None) -> tuple[str, bool]:
    """The table and one summary line per model; True when every replica answered, is ready and agrees."""
    lines = [f"{'REPLICA':<32} {'READY':<5}  {'MODEL':<16} {'DEFAULT':>7}  {'PENDING':<11} {'AVAILABLE':<10} FAILED"]
    names: set[str] = set()
    for replica in replicas:
        shown = [m for n, m in sorted(replica.models.items()) if only is None or n == only]
        names.update(m.name for m in shown)
        lines += [_row(replica, m) for m in shown] or [_row(replica, None)]
    summaries = [_summary(name, replicas) for name in sorted(names)]
    healthy = bool(replicas) and all(r.error is None and r.ready for r in replicas)
    converged = healthy and all(agree for _, agree in summaries) and (only is None or only in names)
    lines.append("")
    lines += [text for text, _ in summaries] or ["no replica reports a model" + (f" named {only!r}" if only else "")]
    if not healthy:
        lines.append("not every replica is reachable and ready")
    return "\n".join(lines), converged


def _summary(name: str, replicas: Sequence[ReplicaView]) -> tuple[str, bool]:
    defaults = Counter(r.models[name].default if name in r.models else None for r in replicas)
    pending = Counter(r.models[name].pending for r in replicas if name in r.models and r.models[name].pending)
    if len(defaults) == 1:
        ((version, count),) = defaults.items()
        text = f"{name}: version {version if version is not None else '-'} on every replica ({count})"
    else:
        shares = sorted(defaults.items(), key=str)
        text = f"{name}: replicas DISAGREE: " + ", ".join(f"version {v or '-'} on {n}" for v, n in shares)
    if pending:
        text += "; pending switch to " + ", ".join(f"version {v} on {n}" for v, n in sorted(pending.items()))
    return text, len(defaults) == 1 and None not in defaults


# -- finding replicas in Kubernetes --------------------------------------------------------------------------


@dataclass(frozen=True)
class KubernetesApis:
    """The two API groups discovery reads (``kubernetes.client`` objects, or fakes in unit tests)."""

    core: Any  # CoreV1Api
    discovery: Any  # DiscoveryV1Api
    namespace: str  # the namespace of the in-cluster service account or of the kubeconfig context


def connect_kubernetes() -> KubernetesApis:
    """In a pod: its service account; elsewhere: the kubeconfig's current context."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise FailedPrecondition(
            "finding replicas through Kubernetes needs the kubernetes package (pip install 'rtserve[fleet]'); "
            "or pass --endpoints"
        ) from None
    try:
        config.load_incluster_config()
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except (config.ConfigException, OSError):
        try:
            config.load_kube_config()
            _, context = config.list_kube_config_contexts()
        except (config.ConfigException, OSError) as error:
            raise FailedPrecondition(f"no Kubernetes configuration found ({error}); pass --endpoints") from None
        namespace = context.get("context", {}).get("namespace") or "default"
    return KubernetesApis(client.CoreV1Api(), client.DiscoveryV1Api(), namespace)


def kubernetes_endpoints(
    apis: KubernetesApis, namespace: str | None, service: str, selector: str | None, port_name: str = "http"
) -> list[str]:
    """The URL of every endpoint (ready or not) of the Service named ``service``, or of every Service that
    matches the label ``selector``."""
    namespace = namespace or apis.namespace
    if selector is None:
        services = [service]
    else:
        found = apis.core.list_namespaced_service(namespace, label_selector=selector)
        services = [item.metadata.name for item in found.items]
    urls: set[str] = set()
    for name in services:
        slices = apis.discovery.list_namespaced_endpoint_slice(namespace, label_selector=f"{SERVICE_NAME_LABEL}={name}")
        for endpoint_slice in slices.items:
            urls.update(_slice_urls(endpoint_slice, port_name))
    return sorted(urls)


def _slice_urls(endpoint_slice: Any, port_name: str) -> list[str]:
    ports = endpoint_slice.ports or []
    port = next((p.port for p in ports if p.name == port_name), ports[0].port if len(ports) == 1 else None)
    if port is None:
        return []
    ipv6 = endpoint_slice.address_type == "IPv6"
    return [
        f"http://[{address}]:{port}" if ipv6 else f"http://{address}:{port}"
        for endpoint in endpoint_slice.endpoints or []
        for address in endpoint.addresses or []
    ]
