"""Fixtures shared by the Kubernetes delivery tests: the tools and the rendered manifests (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_support import (
    K8S,
    Manifest,
    Rendering,
    find_tool,
    helm_template,
    load_all,
    run_ok,
    scenario_files,
    scenario_name,
)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    return find_tool("kubectl")


@pytest.fixture(scope="session")
def chart_renderings(helm_bin: Path) -> dict[str, Rendering]:
    """`helm template` of every scenario: helm/rtserve/ci/*.yaml and k8s/values-dev.yaml."""
    return {scenario_name(path): helm_template(helm_bin, [path], name=scenario_name(path)) for path in scenario_files()}


@pytest.fixture(scope="session")
def k8s_objects(kubectl_bin: Path) -> list[Manifest]:
    """`kubectl kustomize k8s/`: the development cluster's objects."""
    return load_all(run_ok([kubectl_bin, "kustomize", K8S]))
