"""The alert rules: one source (the chart's PrometheusRule template), unit-tested with `promtool test rules`.

* k8s/ holds the rules rendered from the chart and a copy of the dashboard; both equal what the chart ships.
* alerts_test.yml pins when every alert fires and with which labels, against that rendered rule file.
* Every alert has a runbook entry in docs/operations.md, and every threshold the chart lets an operator choose for
  the latency objective is a real bucket boundary of the histogram it reads.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.utils import floatToGoString

from service.observability.metrics import LATENCY_BUCKETS

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
RULES = ROOT / "k8s" / "prometheus" / "rtserve-rules.yml"
UNIT_TESTS = HERE / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
SCHEMA = ROOT / "helm" / "rtserve" / "values.schema.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)", pytrace=False)
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


def run_unit_tests(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    """promtool test rules on ``tests`` with the rendered rules, annotations left out (see alerts_test.yml)."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document), encoding="utf-8")
    (tmp_path / "alerts_test.yml").write_text(tests, encoding="utf-8")
    command = [promtool(), "test", "rules", "alerts_test.yml"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


def test_k8s_copies_are_rendered_from_the_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_observability.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_promtool_unit_tests(tmp_path: Path) -> None:
    result = run_unit_tests(tmp_path, UNIT_TESTS.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    document = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    firing = {
        case["alertname"]
        for test in document["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == alert_names()


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """Control: an expectation the rules do not meet (drift on the undrifted feature) fails promtool."""
    wrong = UNIT_TESTS.read_text(encoding="utf-8").replace('feature: "features[2]"}', 'feature: "features[0]"}')
    assert wrong != UNIT_TESTS.read_text(encoding="utf-8")
    assert run_unit_tests(tmp_path, wrong).returncode != 0


def test_every_alert_has_a_runbook() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    missing = sorted(name for name in alert_names() if f"\n### {name}\n" not in text)
    assert missing == [], f"no '### <alert>' runbook entry in docs/operations.md for {missing}"


def test_latency_thresholds_are_histogram_buckets() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    latency = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["latency"]
    choices = latency["properties"]["thresholdSeconds"]["enum"]
    assert choices and set(choices) <= set(LATENCY_BUCKETS)
    # The rules select the bucket by its le label, which must read exactly as the server writes it.
    written = {floatToGoString(bucket) for bucket in LATENCY_BUCKETS}
    selected = set(re.findall(r'le="([^"]+)"', RULES.read_text(encoding="utf-8")))
    assert selected and selected <= written, selected - written


def test_dev_prometheus_loads_the_rendered_rules() -> None:
    """k8s/: the rule file goes into the prometheus-config ConfigMap, mounted where prometheus.yml looks for it."""
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text(encoding="utf-8"))
    config_map = next(c for c in kustomization["configMapGenerator"] if c["name"] == "prometheus-config")
    keys = {entry.split("=", 1)[0]: entry.split("=", 1)[1] for entry in config_map["files"]}
    prometheus = yaml.safe_load((ROOT / "k8s" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert [Path(path).name for path in prometheus["rule_files"]] == ["rtserve-rules.yml"]
    assert keys["rtserve-rules.yml"] == "prometheus/rtserve-rules.yml"
