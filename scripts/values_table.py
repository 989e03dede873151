#!/usr/bin/env python3
"""Write (or check) the chart's values table in docs/kubernetes.md from helm/rtserve/values.yaml.

Every key in values.yaml carries a description in the `# --` comment block right above it. A map whose keys are
described gets one row per key; a map or list without described keys (labels, annotations, peers, ...) gets one
row of its own. A key with neither a description nor described children is an error.

    python scripts/values_table.py           # print the table
    python scripts/values_table.py --write   # replace the table between the markers in docs/kubernetes.md
    python scripts/values_table.py --check   # exit 1 when docs/kubernetes.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "helm" / "rtserve" / "values.yaml"
DOCS = ROOT / "docs" / "kubernetes.md"
START = "<!-- values-table:start (scripts/values_table.py --write) -->"
END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?:\s|$)")


def descriptions(text: str) -> dict[str, str]:
    """Dotted key path -> the `# --` description above it."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:
            comment = []
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        starts = [i for i, text_line in enumerate(comment) if text_line.startswith("--")]
        if starts:
            block = comment[starts[-1] :]
            block[0] = block[0][2:].strip()
            found[".".join(key for _, key in stack)] = " ".join(part for part in block if part)
        comment = []
    return found


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "map"


def rows(values: dict[str, Any], docs: dict[str, str], prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        children = isinstance(value, dict) and any(other.startswith(f"{path}.") for other in docs)
        if children:
            yield from rows(value, docs, f"{path}.")
        elif path in docs:
            yield path, value, docs[path]
        else:
            raise SystemExit(f"{VALUES}: {path} has no `# --` description")


def table() -> str:
    text = VALUES.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, value, description in rows(values, descriptions(text)):
        default = json.dumps(value, separators=(", ", ": "))
        cell = description.replace("|", "\\|")
        lines.append(f"| `{path}` | {type_name(value)} | `{default}` | {cell} |")
    return "\n".join(lines) + "\n"


def with_table(document: str, rendered: str) -> str:
    if START not in document or END not in document:
        raise SystemExit(f"{DOCS}: the markers {START!r} and {END!r} are missing")
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{rendered}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update docs/kubernetes.md")
    mode.add_argument("--check", action="store_true", help="fail when docs/kubernetes.md is out of date")
    args = parser.parse_args()
    rendered = table()
    if not (args.write or args.check):
        sys.stdout.write(rendered)
        return 0
    document = DOCS.read_text(encoding="utf-8")
    updated = with_table(document, rendered)
    if args.check:
        if updated != document:
            print(f"{DOCS} is out of date: run python scripts/values_table.py --write", file=sys.stderr)
            return 1
        return 0
    DOCS.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
