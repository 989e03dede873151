"""docs/kubernetes.md documents every chart value: its table is exactly what scripts/values_table.py writes from
the `# --` comments of values.yaml (which it refuses to write while a key has no description)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from kube_support import CHART, ROOT, load_one

DOCS = ROOT / "docs" / "kubernetes.md"


def test_values_table_is_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "values_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_value_key_is_in_the_table() -> None:
    """Each key has its own row, or sits inside a map that has one (labels, annotations, ...)."""
    docs = DOCS.read_text(encoding="utf-8")

    def missing(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if f"| `{path}` |" in docs:
                continue
            if isinstance(value, dict) and value:
                yield from missing(value, f"{path}.")
            else:
                yield path

    assert list(missing(load_one(CHART / "values.yaml"))) == []


def test_docs_walk_through_the_cluster_and_the_rollout() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for command in (
        "kind create cluster --name rtserve --config k8s/kind/cluster.yaml",
        "kind load docker-image rtserve:dev --name rtserve",
        "kubectl apply -k k8s/",
        "helm upgrade --install rtserve helm/rtserve -n rtserve -f k8s/values-dev.yaml",
        "helm test rtserve -n rtserve",
        "http://localhost/v1/models/iris:predict",
        "rtserve push ./export/iris --model iris --version 2",
    ):
        assert command in docs, command
