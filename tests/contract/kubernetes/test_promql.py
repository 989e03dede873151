"""Every PromQL expression the chart and k8s/ ship parses: the alert rules (with their annotation templates), the
dashboard's queries and the adapter's query, all through `promtool check rules` (Debian's `prometheus` package).

Only the syntax is checked here; test_chart_app_contract.py checks that the metric names exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from kube_support import CHART, K8S, Rendering, dashboard_expressions, find_tool, load_one, run

# Grafana's template variables, replaced by values PromQL accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$model": ".*",
}


def promtool_check(rules: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    result = run([find_tool("promtool"), "check", "rules", path])
    assert result.returncode == 0, f"promtool check rules:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout


def grafana_to_promql(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    label_values = re.fullmatch(r"label_values\((.+),\s*[a-z_]+\)", expression.strip())
    return label_values.group(1) if label_values else expression


def test_alert_rules_parse(chart_renderings: dict[str, Rendering], tmp_path: Path) -> None:
    rule = chart_renderings["ci/monitoring-values"].one("PrometheusRule")
    promtool_check({"groups": rule["spec"]["groups"]}, tmp_path)


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text(encoding="utf-8"))
    expressions = [grafana_to_promql(expr) for expr in dashboard_expressions(dashboard)]
    assert len(expressions) > 10
    leftovers = [expr for expr in expressions if "$" in expr]
    assert leftovers == [], f"unknown Grafana variables: {leftovers}"
    rules = [{"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(expressions)]
    promtool_check({"groups": [{"name": "dashboard", "rules": rules}]}, tmp_path)


def test_adapter_queries_parse(tmp_path: Path) -> None:
    adapter = load_one(K8S / "prometheus-adapter" / "config.yaml")
    rules = []
    for index, rule in enumerate(adapter["rules"]):
        series = rule["seriesQuery"].strip("'")
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.split("{")[0])
            .replace("<<.LabelMatchers>>", 'namespace="rtserve",pod=~"rtserve-.*"')
            .replace("<<.GroupBy>>", "pod")
        )
        rules += [
            {"record": f"adapter:series_{index}", "expr": series},
            {"record": f"adapter:query_{index}", "expr": query},
        ]
    promtool_check({"groups": [{"name": "adapter", "rules": rules}]}, tmp_path)


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """Control: a syntax error does fail the check."""
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]}),
        encoding="utf-8",
    )
    result = run([find_tool("promtool"), "check", "rules", path])
    assert result.returncode != 0
