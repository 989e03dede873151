"""`rtserve fleet status`: reading a replica's /metrics, the report, and finding replicas in Kubernetes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from fakes import FakeLoader, write_fake_version
from service.manager import ModelManager
from service.observability.metrics import Metrics
from service.repository.local import LocalRepository
from service.settings import Settings
from service.tools.fleet import (
    KubernetesApis,
    ModelView,
    ReplicaView,
    fleet_status,
    kubernetes_endpoints,
    models_from_metrics,
    render,
)

NOON = 1_764_072_000.0


def test_a_replica_metrics_tell_default_pending_available_and_failed(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    for version, broken in ((1, False), (2, False), (3, True)):
        repo.upload_version("m", version, write_fake_version(tmp_path / f"v{version}", version, broken))
    repo.write_model_file(
        "m", "serving.json", b'{"default": 2, "activate_at": "2025-11-25T12:00:00Z", "previous_default": 1}'
    )
    metrics = Metrics(CollectorRegistry())
    settings = Settings(repository=str(repo.root), cache_dir=str(tmp_path / "cache"), version_policy="all")
    manager = ModelManager(settings, repo, FakeLoader(), metrics, wall_clock=lambda: NOON - 5)
    manager.poll_once()
    views = models_from_metrics(generate_latest(metrics.registry).decode())
    assert views == {"m": ModelView("m", default=1, pending=2, blocked=False, available=(1, 2), failed=(3,))}


def test_report_says_whether_the_fleet_agrees() -> None:
    one = ModelView("iris", default=1, available=(1,))
    two = ModelView("iris", default=2, available=(2,))
    agreeing = [ReplicaView("http://a:8080", True, {"iris": one}), ReplicaView("http://b:8080", True, {"iris": one})]
    text, converged = render(agreeing)
    assert converged
    assert "iris: version 1 on every replica (2)" in text
    text, converged = render([agreeing[0], ReplicaView("http://b:8080", True, {"iris": two})])
    assert not converged
    assert "iris: replicas DISAGREE: version 1 on 1, version 2 on 1" in text
    text, converged = render([*agreeing, ReplicaView("http://c:8080", error="unreachable: refused")])
    assert not converged
    assert "unreachable: refused" in text
    assert not render(agreeing, only="other")[1]
    switching = ModelView("iris", default=1, pending=2, available=(1, 2))
    text, converged = render([ReplicaView("http://a:8080", True, {"iris": switching})])
    assert converged
    assert "iris: version 1 on every replica (1); pending switch to version 2 on 1" in text


def test_an_unreachable_replica_is_reported_not_raised() -> None:
    (view,) = fleet_status(["127.0.0.1:9"], timeout_s=1.0)  # the discard port: nothing listens on loopback
    assert view.endpoint == "http://127.0.0.1:9"
    assert view.error is not None and view.error.startswith("unreachable")


class FakeKubernetes:
    """Stands in for CoreV1Api and DiscoveryV1Api: no cluster runs where unit tests run. The real client is
    exercised against a cluster by tests/e2e; here the point is which objects discovery reads and how."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def list_namespaced_service(self, namespace: str, label_selector: str) -> Any:
        self.calls.append(("services", namespace, label_selector))
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name="prod-rtserve"))])

    def list_namespaced_endpoint_slice(self, namespace: str, label_selector: str) -> Any:
        self.calls.append(("endpointslices", namespace, label_selector))
        ports = [SimpleNamespace(name="metrics", port=9090), SimpleNamespace(name="http", port=8080)]
        ready = SimpleNamespace(addresses=["10.0.0.5"], conditions=SimpleNamespace(ready=True))
        not_ready = SimpleNamespace(addresses=["10.0.0.6"], conditions=SimpleNamespace(ready=False))
        v4 = SimpleNamespace(address_type="IPv4", ports=ports, endpoints=[ready, not_ready])
        v6 = SimpleNamespace(address_type="IPv6", ports=ports, endpoints=[SimpleNamespace(addresses=["fd00::7"])])
        return SimpleNamespace(items=[v4, v6])


def test_kubernetes_discovery_reads_the_service_endpoint_slices() -> None:
    fake = FakeKubernetes()
    apis = KubernetesApis(core=fake, discovery=fake, namespace="serving")
    urls = kubernetes_endpoints(apis, None, "rtserve", None)
    # Not-ready endpoints are listed too: a replica failing its probe is exactly what fleet status must show.
    assert urls == ["http://10.0.0.5:8080", "http://10.0.0.6:8080", "http://[fd00::7]:8080"]
    assert fake.calls == [("endpointslices", "serving", "kubernetes.io/service-name=rtserve")]
    fake.calls.clear()
    kubernetes_endpoints(apis, "prod", "rtserve", "app.kubernetes.io/name=rtserve")
    assert fake.calls == [
        ("services", "prod", "app.kubernetes.io/name=rtserve"),
        ("endpointslices", "prod", "kubernetes.io/service-name=prod-rtserve"),
    ]
