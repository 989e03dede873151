"""The benchmark's plot, run in the ``tools`` venv (matplotlib lives there, not in rtserve's virtualenv).

usage: python bench/plot.py RESULTS.json OUT.png

Top: closed-loop throughput against concurrency (1 row: requests/s; 64 rows: rows/s, with the in-process call
rate at batch 64 as a line). Bottom: open-loop p99 latency against the offered rate (as a fraction of the lane's
best closed-loop rate), for each payload.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend choice

STYLE = {
    "rtserve": "-",
    "floor-asgi": ":",
    "floor-fastapi": ":",
    "kserve": "--",
    "mlserver": "-.",
    "mlserver-batching": "-.",
    "seed": "--",
    "rtserve-before": "-",
    "pytriton": "--",
}


def label(results: dict[str, Any], entry: dict[str, Any]) -> str:
    siblings = [e for e in results["lanes"] if e["server"] == entry["server"]]
    alone = len(siblings) == 1 and entry.get("kind", "rest") == "rest"  # a gRPC lane is always named
    return entry["title"] if alone else f"{entry['title']} {entry['lane']}"


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    lanes = [e for e in results["lanes"] if e.get("status") == "ok"]
    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    for column, rows in enumerate(("1", "64")):
        top, bottom = axes[0][column], axes[1][column]
        for entry in lanes:
            measured = entry["payloads"][rows]
            style = STYLE.get(entry["server"], "-")
            closed = sorted(measured["closed"], key=lambda run: run["connections"])
            factor = int(rows) if rows != "1" else 1
            top.plot(
                [r["connections"] for r in closed],
                [r["rps"] * factor for r in closed],
                style,
                marker="o",
                label=label(results, entry),
            )
            opened = sorted(measured["open"], key=lambda run: run["fraction"])
            bottom.plot(
                [r["fraction"] for r in opened],
                [r["latency_ms"]["p99"] for r in opened],
                style,
                marker="o",
                label=label(results, entry),
            )
        if rows == "64":
            bound = next((r["rows_per_s"] for r in results["inprocess"]["rates"] if r["rows"] == 64), None)
            if bound:
                top.axhline(bound, color="black", linewidth=1, label="in-process, batch 64")
        top.set_xscale("log", base=2)
        top.set_yscale("log")
        top.set_xlabel("concurrency (closed loop: wrk connections; h2load streams for gRPC)")
        top.set_ylabel("requests/s" if rows == "1" else "rows/s")
        top.set_title(f"{rows} row{'s' if rows != '1' else ''} per request: throughput")
        bottom.set_yscale("log")
        bottom.set_xlabel("offered rate / best closed-loop rate (open loop)")
        bottom.set_ylabel("p99 latency from intended send time, ms")
        bottom.set_title(f"{rows} row{'s' if rows != '1' else ''} per request: open-loop p99")
        for axis in (top, bottom):
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
    machine = results["machine"]
    figure.suptitle(f"rtserve bench {results['started']} - {machine['cpu']}, server on 1 core, load on the other")
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
