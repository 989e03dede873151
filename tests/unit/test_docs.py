"""The operator documentation names exactly the settings and metrics the code has."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.observability.metrics import Metrics
from service.settings import environment_variables

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def table_after(marker: str) -> set[str]:
    """The first-column names (in backticks) of the Markdown table that follows a marker comment."""
    text = OPERATIONS.read_text()
    rows = text[text.index(marker) :].split("\n\n", 1)[0].splitlines()
    return {match.group(1) for row in rows if (match := re.match(r"\| `([^`]+)` \|", row))}


def test_settings_table_matches_settings() -> None:
    assert table_after("settings-table") == {variable.name for variable in environment_variables()}


def test_metrics_table_matches_metrics() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = set()
    for family in registry.collect():
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    assert table_after("metrics-table") == exported


def test_every_setting_has_a_description() -> None:
    assert all(variable.description for variable in environment_variables())
