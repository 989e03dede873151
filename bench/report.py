"""Render a results.json as docs/benchmarks.md (tables, targets as ratios, profile, memory) plus the PNG plot.

.venv/bin/python -m bench.report [bench/results/latest.json] [--docs]   # re-render without re-running
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import envs
from bench.profile import summarise

TARGET_CONCURRENCY = 32
KSERVE_FACTOR, MLSERVER_FACTOR, SEED_FACTOR = 10.0, 10.0, 100.0
FLOOR_SHARE, P99_LIMIT_MS, TAIL_FACTOR, ROWS_SHARE = 0.6, 15.0, 3.0, 0.7
GRPC_PEER_FACTOR = 3.0  # issue 11: rtserve gRPC >= 3x the better of KServe's and MLServer's gRPC
GRPC_PEERS = (("kserve", "v2-grpc"), ("mlserver", "v2-grpc"), ("mlserver-batching", "v2-grpc"))
NOISY_PCT = 10.0
# Issue 13's compute-bound targets (the CNN case, bench/cnnbench.py), per lane: (rtserve's lane, its name in the
# report, MLServer's lane to compare with: MLServer reads no binary extension, so its REST lane is V2 JSON).
CNN_INPROCESS_SHARE, CNN_MLSERVER_FACTOR = 0.8, 2.0
CNN_LANES = (("cnn-v2-binary", "V2 binary REST", "cnn-v2-json"), ("cnn-v2-grpc", "V2 gRPC raw", "cnn-v2-grpc"))
# A second version may add its weights once (plus TensorFlow's own bookkeeping); the old one must go again.
TWO_VERSIONS_SLACK, GIVEN_BACK_SLACK = 1.25, 0.25


# ---------------------------------------------------------------- lookups


def lane_of(results: dict[str, Any], server: str, lane: str) -> dict[str, Any] | None:
    return next((e for e in results["lanes"] if e["server"] == server and e["lane"] == lane), None)


def label(results: dict[str, Any], entry: dict[str, Any]) -> str:
    siblings = [e for e in results["lanes"] if e["server"] == entry["server"]]
    alone = len(siblings) == 1 and entry.get("kind", "rest") == "rest"  # a gRPC lane is always named
    return entry["title"] if alone else f"{entry['title']} {entry['lane']}"


def closed_run(results: dict[str, Any], server: str, lane: str, rows: int, c: int) -> dict[str, Any] | None:
    entry = lane_of(results, server, lane)
    if not entry or entry.get("status") != "ok":
        return None
    runs = entry["payloads"][str(rows)]["closed"]
    return next((run for run in runs if run["connections"] == c), None)


def open_run(results: dict[str, Any], server: str, lane: str, rows: int, fraction: float) -> dict[str, Any] | None:
    entry = lane_of(results, server, lane)
    if not entry or entry.get("status") != "ok":
        return None
    runs = entry["payloads"][str(rows)]["open"]
    return next((run for run in runs if abs(run["fraction"] - fraction) < 1e-9), None)


def inprocess_rows_per_s(results: dict[str, Any], batch: int) -> float | None:
    return next((r["rows_per_s"] for r in results["inprocess"]["rates"] if r["rows"] == batch), None)


# ---------------------------------------------------------------- targets


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _ratio_target(
    results: dict[str, Any], name: str, ours: tuple[str, str], theirs: tuple[str, str], factor: float, fmt: str
) -> dict[str, Any]:
    mine = closed_run(results, *ours, 1, TARGET_CONCURRENCY)
    other = closed_run(results, *theirs, 1, TARGET_CONCURRENCY)
    if not mine or not other or other["rps"] <= 0:
        missing = [f"{s} {lane}" for (s, lane), run in ((ours, mine), (theirs, other)) if not run]
        return {"target": name, "measured": "missing: " + ", ".join(missing), "ratio": "", "ok": None}
    ratio = mine["rps"] / other["rps"]
    measured = f"{mine['rps']:,.0f} vs {other['rps']:,.0f} req/s"
    return {"target": name, "measured": measured, "ratio": fmt.format(ratio), "ok": ratio >= factor, "value": ratio}


def _not_measured(results: dict[str, Any], lanes: Iterable[tuple[str, str]]) -> str:
    """ "not measured: <server lane> (<why>)" for the lanes of a target that have no run."""
    missing = []
    for server, lane in lanes:
        entry = lane_of(results, server, lane)
        if entry is None:
            missing.append(f"{server} {lane} (not in this run)")
        elif entry.get("status") != "ok":
            missing.append(f"{server} {lane} ({entry.get('status')}: {str(entry.get('why', ''))[:80]})")
    return "not measured: " + "; ".join(missing)


def grpc_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's two gRPC targets, same run: rtserve's gRPC lanes >= 3x the better peer's V2 gRPC at c=32, 1 row;
    rtserve's V2 gRPC (raw) at 64 rows >= its V2 binary REST lane in rows/s at c=32."""
    c = TARGET_CONCURRENCY
    rows: list[dict[str, Any]] = []
    peers = [(server, lane, closed_run(results, server, lane, 1, c)) for server, lane in GRPC_PEERS]
    measured_peers = [(server, run) for server, _, run in peers if run and run["rps"] > 0]
    best_peer = max(measured_peers, key=lambda item: item[1]["rps"]) if measured_peers else None
    for lane, name in (("v2-grpc", "V2 gRPC raw"), ("tfserving-grpc", "TF Serving gRPC")):
        target = f"gRPC, 1 row, c={c}: rtserve {name} >= 3x the better of KServe's and MLServer's V2 gRPC"
        mine = closed_run(results, "rtserve", lane, 1, c)
        if not mine or not best_peer:
            absent = [("rtserve", lane)] if not mine else []
            absent += [] if best_peer else list(GRPC_PEERS)
            rows.append({"target": target, "measured": _not_measured(results, absent), "ratio": "", "ok": None})
            continue
        ratio = mine["rps"] / best_peer[1]["rps"]
        rows.append(
            {
                "target": target,
                "measured": f"{mine['rps']:,.0f} vs {best_peer[1]['rps']:,.0f} req/s ({best_peer[0]})",
                "ratio": f"{ratio:.1f}x",
                "ok": ratio >= GRPC_PEER_FACTOR,
                "value": ratio,
            }
        )
    target = f"gRPC, 64 rows, c={c}: rtserve V2 gRPC raw >= its V2 binary REST lane, in rows/s"
    grpc_run = closed_run(results, "rtserve", "v2-grpc", 64, c)
    rest_run = closed_run(results, "rtserve", "v2-binary", 64, c)
    if grpc_run and rest_run and rest_run["rps"] > 0:
        ratio = grpc_run["rps"] / rest_run["rps"]
        measured = f"{grpc_run['rps'] * 64:,.0f} vs {rest_run['rps'] * 64:,.0f} rows/s"
        rows.append({"target": target, "measured": measured, "ratio": f"{ratio:.2f}x", "ok": ratio >= 1.0})
    else:
        pairs = ((("rtserve", "v2-grpc"), grpc_run), (("rtserve", "v2-binary"), rest_run))
        absent = [key for key, run in pairs if not run]
        rows.append({"target": target, "measured": _not_measured(results, absent), "ratio": "", "ok": None})
    return rows


def cnn_view(results: dict[str, Any]) -> dict[str, Any]:
    """The run as the lookups see it, with the CNN case's lanes in place of the Iris ones."""
    return {**results, "lanes": results.get("cnn", {}).get("lanes", [])}


def compute_bound_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's compute-bound targets, per lane, 1 image per request at c=32: rtserve >= 80% of the CNN's
    in-process rows/s at its best batch size, and >= 2x MLServer with its adaptive batching on. No rows for a run
    without the CNN case (results written before it)."""
    cnn = results.get("cnn")
    if not cnn:
        return []
    c, view = TARGET_CONCURRENCY, cnn_view(results)
    best = max(cnn["inprocess"]["rates"], key=lambda rate: rate["rows_per_s"])
    rows: list[dict[str, Any]] = []
    for lane, name, peer_lane in CNN_LANES:
        mine = closed_run(view, "rtserve", lane, 1, c)
        target = f"compute-bound CNN, 1 image, c={c}: rtserve {name} >= 80% of the in-process best-batch rows/s"
        if mine:
            share = mine["rps"] / best["rows_per_s"]
            measured = f"{mine['rps']:,.0f} images/s vs {best['rows_per_s']:,.0f} in-process (batch {best['rows']})"
            ok = share >= CNN_INPROCESS_SHARE
            rows.append({"target": target, "measured": measured, "ratio": f"{share:.0%}", "ok": ok, "value": share})
        else:
            rows.append(
                {"target": target, "measured": _not_measured(view, [("rtserve", lane)]), "ratio": "", "ok": None}
            )
        target = f"compute-bound CNN, 1 image, c={c}: rtserve {name} >= 2x MLServer with adaptive batching"
        other = closed_run(view, "mlserver-batching", peer_lane, 1, c)
        if mine and other and other["rps"] > 0:
            ratio = mine["rps"] / other["rps"]
            measured = f"{mine['rps']:,.0f} vs {other['rps']:,.0f} images/s (MLServer {peer_lane})"
            ok = ratio >= CNN_MLSERVER_FACTOR
            rows.append({"target": target, "measured": measured, "ratio": f"{ratio:.1f}x", "ok": ok, "value": ratio})
        else:
            absent = [
                key for key, run in ((("rtserve", lane), mine), (("mlserver-batching", peer_lane), other)) if not run
            ]
            rows.append({"target": target, "measured": _not_measured(view, absent), "ratio": "", "ok": None})
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    c = TARGET_CONCURRENCY
    rows: list[dict[str, Any]] = [
        _ratio_target(
            results,
            f"1 row, c={c}: >= 10x KServe (TF Serving REST vs KServe V1, same body)",
            ("rtserve", "tfserving"),
            ("kserve", "tfserving"),
            KSERVE_FACTOR,
            "{:.1f}x",
        ),
        _ratio_target(
            results,
            f"1 row, c={c}: >= 10x KServe (V2 JSON)",
            ("rtserve", "v2-json"),
            ("kserve", "v2-json"),
            KSERVE_FACTOR,
            "{:.1f}x",
        ),
        _ratio_target(
            results,
            f"1 row, c={c}: >= 10x MLServer (V2 JSON)",
            ("rtserve", "v2-json"),
            ("mlserver", "v2-json"),
            MLSERVER_FACTOR,
            "{:.1f}x",
        ),
        _ratio_target(
            results,
            f"1 row, c={c}: >= 60% of the bare ASGI floor (TF Serving REST, same body)",
            ("rtserve", "tfserving"),
            ("floor-asgi", "tfserving"),
            FLOOR_SHARE,
            "{:.0%}",
        ),
    ]
    for lane in ("tfserving", "v2-json"):
        run = closed_run(results, "rtserve", lane, 1, c)
        p99 = run["latency_ms"]["p99"] if run else None
        rows.append(
            {
                "target": f"1 row, c={c}: p99 < 15 ms (rtserve {lane})",
                "measured": f"p99 {p99:.2f} ms (p50 {run['latency_ms']['p50']:.2f} ms)" if run else "missing",
                "ratio": f"{p99 / P99_LIMIT_MS:.0%} of the limit" if p99 is not None else "",
                "ok": (p99 < P99_LIMIT_MS) if p99 is not None else None,
            }
        )
    rows.append(
        _ratio_target(
            results,
            f"1 row, c={c}: >= 100x the seed design (Flask + Keras, same body)",
            ("rtserve", "tfserving"),
            ("seed", "tfserving"),
            SEED_FACTOR,
            "{:.0f}x",
        )
    )
    half = open_run(results, "rtserve", "tfserving", 1, 0.5)
    if half:
        p50, p99 = half["latency_ms"]["p50"], half["latency_ms"]["p99"]
        failed = half["non2xx"] + half["errors"] + half["unfinished"]
        rows.append(
            {
                "target": "open loop at half the max sustainable rate: p99 <= 3x p50 (rtserve TF Serving REST, 1 row)",
                "measured": f"{half['rate']:,.0f} req/s offered: p50 {p50:.2f} ms, p99 {p99:.2f} ms, {failed} failed",
                "ratio": f"p99 = {p99 / p50:.1f}x p50",
                "ok": p99 <= TAIL_FACTOR * p50 and failed == 0,
            }
        )
    else:
        rows.append(
            {
                "target": "open loop at half the max sustainable rate: p99 <= 3x p50",
                "measured": "missing",
                "ratio": "",
                "ok": None,
            }
        )
    bound = inprocess_rows_per_s(results, 64)
    best: tuple[float, str, int] | None = None
    for lane in ("tfserving", "v2-json", "v2-binary"):
        entry = lane_of(results, "rtserve", lane)
        if entry and entry.get("status") == "ok":
            for run in entry["payloads"]["64"]["closed"]:
                candidate = (run["rps"] * 64, lane, run["connections"])
                best = max(best, candidate) if best else candidate
    if best and bound:
        rows.append(
            {
                "target": "64 rows: >= 70% of the in-process call rate at batch 64, in rows/s (best rtserve lane)",
                "measured": f"{best[0]:,.0f} rows/s ({best[1]}, c={best[2]}) vs {bound:,.0f} rows/s in-process",
                "ratio": f"{best[0] / bound:.0%}",
                "ok": best[0] >= ROWS_SHARE * bound,
            }
        )
    for memory in memory_runs(results):
        rows.append(
            {
                "target": f"memory, {memory['model']}: RSS at idle and at its peak during a version swap",
                "measured": f"idle {memory['rss_idle_mib']:.0f} MiB, swap peak "
                f"{memory['rss_peak_during_swap_mib']:.0f} MiB, after {memory['rss_after_swap_mib']:.0f} MiB",
                "ratio": f"peak = {memory['rss_peak_during_swap_mib'] / memory['rss_idle_mib']:.2f}x idle",
                "ok": None,
            }
        )
        weights = memory.get("weights_mib")
        if weights:
            extra = memory["rss_peak_during_swap_mib"] - memory["rss_idle_mib"]
            kept = memory["rss_after_swap_mib"] - memory["rss_idle_mib"]
            swaps = len(memory.get("swaps") or [None])
            rows.append(
                {
                    "target": f"memory, {memory['model']}: {swaps} swaps never hold more than two versions "
                    f"(peak - idle <= {TWO_VERSIONS_SLACK:g}x the weights)",
                    "measured": f"weights {weights:.0f} MiB: peak - idle {extra:.0f} MiB",
                    "ratio": f"{extra / weights:.2f}x the weights",
                    "ok": extra <= TWO_VERSIONS_SLACK * weights,
                }
            )
            rows.append(
                {
                    "target": f"memory, {memory['model']}: the old version's memory is given back to the system "
                    f"(after - idle <= {GIVEN_BACK_SLACK:g}x the weights)",
                    "measured": f"weights {weights:.0f} MiB: after - idle {kept:.0f} MiB",
                    "ratio": f"{kept / weights:.2f}x the weights",
                    "ok": kept <= GIVEN_BACK_SLACK * weights,
                }
            )
    return rows + grpc_targets(results) + compute_bound_targets(results) + coldstart_targets(results)


# ---------------------------------------------------------------- issue 13: low-load latency, before/after, peers

LATENCY_FACTOR = 1.5  # c=1 p50 <= 1.5x (the bare floor's c=1 p50 + the model's in-process call at batch 1)
BEFORE_FACTOR, PYTRITON_FACTOR = 1.5, 3.0
BEFORE_LANES = ("tfserving", "v2-binary", "v2-grpc")
# TF Serving REST vs KServe V1 is issue 4's row (targets()): only the lane it lacks is added here.
ISSUE13_KSERVE = (("v2-binary", "v2-binary", "V2 binary"),)
ISSUE13_PYTRITON = (("v2-binary", "V2 binary"), ("v2-grpc", "V2 gRPC"))


def _measured_ratio(
    results: dict[str, Any], name: str, ours: tuple[str, str], theirs: tuple[str, str], factor: float
) -> dict[str, Any]:
    """_ratio_target at c=32, 1 row, saying why when a side has no run."""
    row = _ratio_target(results, name, ours, theirs, factor, "{:.2f}x")
    if row["ok"] is None:
        row["measured"] = _not_measured(results, (ours, theirs))
    return row


def low_load_target(results: dict[str, Any]) -> dict[str, Any]:
    """c=1, 1 row, TF Serving REST: rtserve's p50 against 1.5x (floor p50 + one in-process call at batch 1)."""
    name = f"c=1, 1 row: rtserve TF Serving REST p50 <= {LATENCY_FACTOR:g}x (bare ASGI floor p50 + in-process call)"
    mine = closed_run(results, "rtserve", "tfserving", 1, 1)
    floor = closed_run(results, "floor-asgi", "tfserving", 1, 1)
    rate = next((r["calls_per_s"] for r in results["inprocess"]["rates"] if r["rows"] == 1), None)
    if not mine or not floor or not rate:
        pairs = ((("rtserve", "tfserving"), mine), (("floor-asgi", "tfserving"), floor))
        absent = [lane for lane, run in pairs if not run]
        measured = "; ".join(
            ([_not_measured(results, absent)] if absent else []) + ([] if rate else ["no in-process rate at batch 1"])
        )
        return {"target": name, "measured": measured, "ratio": "", "ok": None}
    call_ms = 1000.0 / rate
    bound = LATENCY_FACTOR * (floor["latency_ms"]["p50"] + call_ms)
    p50 = mine["latency_ms"]["p50"]
    return {
        "target": name,
        "measured": f"p50 {p50:.3f} ms; floor p50 {floor['latency_ms']['p50']:.3f} ms + in-process call "
        f"{call_ms:.3f} ms: bound {bound:.3f} ms",
        "ratio": f"{p50 / bound:.2f}x the bound",
        "ok": p50 <= bound,
        "value": p50 / bound,
    }


def issue13_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's ratios from one run: the c=1 latency bound, and at c=32 (1 row) rtserve against rtserve before
    this issue, KServe and PyTriton, lane by lane."""
    c = TARGET_CONCURRENCY
    rows = [low_load_target(results)]
    for lane in BEFORE_LANES:
        rows.append(
            _measured_ratio(
                results,
                f"1 row, c={c}: >= {BEFORE_FACTOR:g}x rtserve before ({lane})",
                ("rtserve", lane),
                ("rtserve-before", lane),
                BEFORE_FACTOR,
            )
        )
    for ours, theirs, what in ISSUE13_KSERVE:
        rows.append(
            _measured_ratio(
                results, f"1 row, c={c}: >= 10x KServe ({what})", ("rtserve", ours), ("kserve", theirs), KSERVE_FACTOR
            )
        )
    for lane, what in ISSUE13_PYTRITON:
        rows.append(
            _measured_ratio(
                results,
                f"1 row, c={c}: >= {PYTRITON_FACTOR:g}x PyTriton ({what})",
                ("rtserve", lane),
                ("pytriton", lane),
                PYTRITON_FACTOR,
            )
        )
    return rows


def before_after_rows(results: dict[str, Any]) -> list[list[str]]:
    """rtserve before vs now, each lane both measured: c=1 p50 and c=32 req/s (1 row), with the ratios."""
    table = []
    for entry in results["lanes"]:
        if entry["server"] != "rtserve" or entry.get("status") != "ok":
            continue
        lane = entry["lane"]
        if not closed_run(results, "rtserve-before", lane, 1, TARGET_CONCURRENCY) and not closed_run(
            results, "rtserve-before", lane, 1, 1
        ):
            continue
        cells = [lane]
        for c, key, fmt, better in ((1, "p50", "{:.3f} ms", "lower"), (TARGET_CONCURRENCY, "rps", "{:,.0f}", "")):
            old = closed_run(results, "rtserve-before", lane, 1, c)
            new = closed_run(results, "rtserve", lane, 1, c)
            if not old or not new:
                cells += ["", "", ""]
                continue
            old_value = old["latency_ms"]["p50"] if key == "p50" else old["rps"]
            new_value = new["latency_ms"]["p50"] if key == "p50" else new["rps"]
            ratio = (old_value / new_value if better else new_value / old_value) if old_value and new_value else 0
            cells += [fmt.format(old_value), fmt.format(new_value), f"{ratio:.2f}x"]
        table.append(cells)
    return table


def issue13_section(results: dict[str, Any]) -> list[str]:
    """The report's issue 13 part: its targets and the before/after table."""
    before = results.get("rtserve", {}).get("before") or {}
    lines = ["", "### Issue 13 targets", ""]
    lines += _table(
        ["target", "measured", "ratio", "verdict"],
        [[t["target"], t["measured"], t["ratio"], _verdict(t["ok"])] for t in issue13_targets(results)],
    )
    table = before_after_rows(results)
    if table:
        ref, commit = before.get("ref", "?"), before.get("commit", "?")
        named = f"`{ref}`" if ref == commit else f"`{ref}` = `{commit}`"
        lines += [
            "",
            f"rtserve before ({named}) and now, same run, 1 row (speed-ups: p50 before / now, req/s now / before):",
            "",
        ]
        lines += _table(
            ["lane", "c=1 p50 before", "c=1 p50 now", "speed-up", "c=32 req/s before", "c=32 req/s now", "speed-up"],
            table,
        )
    return lines


def verdict_lines(results: dict[str, Any]) -> list[str]:
    rows = targets(results) + issue13_targets(results)
    return [f"{_verdict(t['ok']).strip('*'):9} {t['target']}: {t['measured']} {t['ratio']}" for t in rows]


# ---------------------------------------------------------------- markdown


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _closed_tables(results: dict[str, Any], rows: int) -> list[str]:
    out: list[dict[str, Any]] = []
    for entry in results["lanes"]:
        if entry.get("status") != "ok":
            continue
        for run in entry["payloads"][str(rows)]["closed"]:
            out.append({"label": label(results, entry), **run})
    summary_cs = sorted({run["connections"] for run in out})
    by_label: dict[str, dict[int, dict[str, Any]]] = {}
    for run in out:
        by_label.setdefault(run["label"], {})[run["connections"]] = run
    lines = _table(
        ["server / lane", *(f"c={c} req/s" for c in summary_cs), "best rows/s"],
        [
            [
                name,
                *(f"{runs[c]['rps']:,.0f}" if c in runs else "" for c in summary_cs),
                f"{max(r['rps'] for r in runs.values()) * rows:,.0f}",
            ]
            for name, runs in by_label.items()
        ],
    )
    lines += ["", "Every run (CPU in % of one core; other = every other process and the kernel meanwhile):", ""]
    lines += _table(
        [
            "server / lane",
            "c",
            "req/s",
            "rows/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "server CPU",
            "wrk/h2load CPU",
            "other CPU",
        ],
        [
            [
                run["label"],
                run["connections"],
                f"{run['rps']:,.0f}",
                f"{run['rps'] * rows:,.0f}",
                _ms(run["latency_ms"]["p50"]),
                _ms(run["latency_ms"]["p90"]),
                _ms(run["latency_ms"]["p99"]),
                run["error_count"],
                f"{run['server_cpu_pct']:.0f}%",
                f"{run['client_cpu_pct']:.0f}%",
                f"{run.get('other_cpu_pct', 0):.0f}%",
            ]
            for run in out
        ],
    )
    return lines


def _send_delay(run: dict[str, Any]) -> str:
    delay = run.get("dispatch_delay_ms")
    if delay:
        return f"{delay['p50']:.3f} / {delay['p99']:.3f}"
    # h2load (gRPC lanes) does not measure it: the peak of calls in flight below its stream budget says none waited.
    return f"n/a (h2load: peak {run.get('peak_in_flight', '?')} in flight of {run.get('stream_budget', '?')})"


def _grpc_section(results: dict[str, Any]) -> list[str]:
    """How the gRPC lanes' answers were known good: h2load counts gRPC errors as HTTP 200s."""
    entries = [e for e in results["lanes"] if e.get("kind") == "grpc" and e.get("status") == "ok"]
    if not entries:
        return ["No gRPC lane measured in this run."]
    table_rows = []
    for entry in entries:
        runs = [run for measured in entry["payloads"].values() for run in (*measured["closed"], *measured["open"])]
        done = sum(run["h2load"]["done"] for run in runs)
        good = sum(run["ok"] for run in runs)
        counted = entry.get("server_counted")
        table_rows.append(
            [
                label(results, entry),
                f"`{entry['path']}`",
                ", ".join(f"{rows} rows: {size} B" for rows, size in entry.get("answer_bytes", {}).items()),
                f"{good:,} of {done:,} ({good / done:.2%})" if done else "",
                entry.get("check_after", ""),
                ", ".join(f"{code}: {count:,.0f}" for code, count in sorted(counted.items())) if counted else "n/a",
            ]
        )
    lines = [
        "h2load counts an HTTP 200 as a success whatever `grpc-status` says. A gRPC error answer carries no message,"
        " a good one exactly one message of the good answer's size (decoded with a real client, grpcio, and checked"
        " against the in-process probabilities before the lane's load): so the good answers are the received DATA"
        " bytes over that size. The same real-client check ran again after the lane's load; rtserve's own"
        " `rtserve_requests_total` for the lane's protocol label (HTTP-style codes) is shown where it has one, from"
        " before the lane's first run to after the check (warm-ups and checks included; 499 = CANCELLED, the calls"
        " still in flight when a timed h2load run ended).",
        "",
    ]
    return lines + _table(
        ["server / lane", "method", "good answer (framed)", "good answers, all runs", "check after", "server counted"],
        table_rows,
    )


def _open_table(results: dict[str, Any]) -> list[str]:
    table_rows = []
    for entry in results["lanes"]:
        if entry.get("status") != "ok":
            continue
        for rows in ("1", "64"):
            measured = entry["payloads"][rows]
            for run in measured["open"]:
                latency = run["latency_ms"]
                failed = run["non2xx"] + run["errors"] + run["unfinished"]
                table_rows.append(
                    [
                        label(results, entry),
                        rows,
                        f"{run['fraction']:.2f} x {measured['max_rate']:,.0f}",
                        f"{run['rate']:,.0f}",
                        f"{run['achieved_rps']:,.0f}",
                        _ms(latency["p50"]),
                        _ms(latency["p90"]),
                        _ms(latency["p99"]),
                        f"{latency['p99'] / latency['p50']:.1f}x" if latency["p50"] > 0 else "",
                        failed,
                        run["max_connections"],
                        _send_delay(run),
                    ]
                )
    return _table(
        [
            "server / lane",
            "rows",
            "offered = fraction x max",
            "offered req/s",
            "answered req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99/p50",
            "failed",
            "connections",
            "send delay p50/p99 ms",
        ],
        table_rows,
    )


def _compute_bound_section(results: dict[str, Any]) -> list[str]:
    """The CNN case: the model, its in-process rate by batch size, MLServer's batching for it, its lanes' runs."""
    cnn = results.get("cnn")
    if not cnn:
        return ["Not measured in this run."]
    view = cnn_view(results)
    batching = ", ".join(f"`{name}: {value:g}`" for name, value in cnn["mlserver_batching"].items())
    lines = [
        f"The model: bench/cnnmodel.py, {cnn['model']}. One image per request (49,152 bytes of float32), closed "
        f"loop at c={', '.join(str(c) for c in cnn['concurrencies'])} only; each server started on this model "
        f"alone. Lanes: V2 binary REST (rtserve, KServe), V2 JSON REST (MLServer: it reads no binary extension), V2 "
        f"gRPC with `raw_input_contents` (all). MLServer with adaptive batching: {batching} (s) for this model. "
        "Answers checked against the in-process probabilities (max abs difference 1e-4) before each lane's load.",
        "",
        f"In-process, the signature called directly on the server's CPU (TensorFlow threads: "
        f"{cnn['inprocess']['tensorflow_threads']}):",
        "",
    ]
    lines += _table(
        ["batch images", "calls/s", "images/s"],
        [[r["rows"], f"{r['calls_per_s']:,.0f}", f"{r['rows_per_s']:,.0f}"] for r in cnn["inprocess"]["rates"]],
    )
    lines += ["", "Closed loop, 1 image per request (rows/s = images/s):", ""]
    lines += _closed_tables(view, 1)
    skipped = _skipped_table(view)
    return lines + (["", "Not measured:", "", *skipped] if skipped else [])


def _skipped_table(results: dict[str, Any]) -> list[str]:
    """The lanes of a run that were not measured, and why ([] when every one was)."""
    skipped = [e for e in results["lanes"] if e.get("status") != "ok"]
    if not skipped:
        return []
    return _table(
        ["server / lane", "status", "why"],
        [[label(results, e), e["status"], e.get("why", "").replace("|", "/")[:200]] for e in skipped],
    )


def _profile_section(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not prof:
        return ["No profile in this run."]
    if "error" in prof:
        return [f"py-spy failed: `{prof['error'][:300]}`"]
    lines = [
        f"py-spy {results['versions'].get('tools', {}).get('py-spy', '')} sampled the rtserve process at 200 Hz "
        f"(`--nonblocking --threads`) for {results['plan']['profile_seconds']:g} s while wrk drove the 1-row TF "
        f"Serving lane at c=32: {prof['samples']:,} samples of threads on CPU (idle threads are not sampled). Raw "
        f"stacks: `bench/results/{results['started']}/{prof['raw_file']}`.",
        "",
        "Threads:",
        "",
    ]
    lines += _table(["thread", "share of samples"], [[t["name"], f"{t['pct']:.1f}%"] for t in prof["threads"][:8]])
    if prof.get("areas"):
        lines += ["", "Self time by area (the sampled frame's package):", ""]
        lines += _table(["area", "share of samples"], [[a["name"], f"{a['pct']:.1f}%"] for a in prof["areas"]])
    lines += ["", "Where the samples were (self time, top 15):", ""]
    lines += _table(["function", "self"], [[f"`{f['name']}`", f"{f['pct']:.1f}%"] for f in prof["self"][:15]])
    lines += ["", "What they were under (inclusive, top 25):", ""]
    lines += _table(["function", "inclusive"], [[f"`{f['name']}`", f"{f['pct']:.1f}%"] for f in prof["inclusive"]])
    return lines


def memory_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The swap measurements of a run (results written before the large-weights model held just one, unnamed)."""
    memory = results.get("memory")
    if not memory:
        return []
    if isinstance(memory, dict):
        return [{"model": "demo model", **memory}]
    return list(memory)


def _memory_section(results: dict[str, Any]) -> list[str]:
    runs = memory_runs(results)
    if not runs:
        return ["Not measured in this run."]
    lines: list[str] = []
    for memory in runs:
        lines += [*_memory_run(memory), ""]
    return lines[:-1]


def _memory_run(memory: dict[str, Any]) -> list[str]:
    load = memory.get("load_during_swap") or {}
    failed = load.get("non2xx", 0) + load.get("errors", 0) + load.get("unfinished", 0) if load else "?"
    swap = f"{memory['swap_seconds']:.2f} s" if memory.get("swap_seconds") is not None else "did not complete"
    lines = [f"**{memory['model']}**", ""]
    swaps = memory.get("swaps") or [
        {"version": 2, "rss_peak_mib": memory["rss_peak_during_swap_mib"], "rss_after_mib": None}
    ]
    moments = [
        ["started, model loaded", f"{memory['rss_started_mib']:.0f}", ""],
        ["idle after a 2 s warm-up load", f"{memory['rss_idle_mib']:.0f}", f"{memory['hwm_before_swap_mib']:.0f}"],
    ]
    for each in swaps:
        version = each["version"]
        moments.append(
            [f"peak while version {version} replaced {version - 1} (5 ms samples)", f"{each['rss_peak_mib']:.0f}", ""]
        )
        if each.get("rss_after_mib") is not None:
            moments.append([f"1 s after version {version - 1} was unloaded", f"{each['rss_after_mib']:.0f}", ""])
    moments.append(
        ["3 s after the last swap", f"{memory['rss_after_swap_mib']:.0f}", f"{memory['hwm_after_swap_mib']:.0f}"]
    )
    lines += _table(["moment", "VmRSS MiB", "VmHWM MiB"], moments)
    lines += [
        "",
        f"The first swap (push to version 2 available and version 1 gone) took {swap}; versions after the last one: "
        f"`{memory.get('versions_after')}`. A light open-loop load of 200 req/s ran across it: "
        f"{load.get('ok', '?')} answered, {failed} failed, p99 {load.get('latency_ms', {}).get('p99', 0):.2f} ms.",
    ]
    return lines


COLDSTART_FACTOR = 1.5
# bench/coldstart.py's phases, as columns: the process's (rtserve_startup_phase_seconds), then the model's load.
COLDSTART_COLUMNS = (
    ("python_start", "python start"),
    ("tensorflow_import", "TF import"),
    ("imports", "other imports"),
    ("setup", "setup"),
    ("load.download", "download"),
    ("load.load", "load"),
    ("load.warm_up", "warm-up"),
    ("load.batch_safety", "batch safety"),
)


def _coldstart_case(results: dict[str, Any], model: str, source: str) -> dict[str, Any] | None:
    cases = (results.get("coldstart") or {}).get("cases", [])
    return next((c for c in cases if c["model"] == model and c["source"] == source), None)


def coldstart_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13: the demo model's cold start from a folder <= 1.5x TensorFlow's own import + load, same pinning."""
    target = f"cold start of the demo model <= {COLDSTART_FACTOR:g}x TF import+load (exec to ready, medians)"
    ours, theirs = _coldstart_case(results, "iris", "local"), _coldstart_case(results, "iris", "tensorflow")
    if ours is None or theirs is None:
        return [{"target": target, "measured": "not measured in this run", "ratio": "", "ok": None}]
    ratio = ours["median_s"] / theirs["median_s"]
    measured = f"{ours['median_s']:.2f} s vs {theirs['median_s']:.2f} s"
    return [{"target": target, "measured": measured, "ratio": f"{ratio:.2f}x", "ok": ratio <= COLDSTART_FACTOR}]


def coldstart_section(results: dict[str, Any]) -> list[str]:
    coldstart = results.get("coldstart")
    if not coldstart:
        return ["Not measured in this run."]
    titles = coldstart.get("titles", {})
    rows = []
    for case in coldstart["cases"]:
        baseline = _coldstart_case(results, case["model"], "tensorflow")
        # TensorFlow alone reports its load as "load": the same column as rtserve's load phase.
        phases = {("load.load" if key == "load" else key): value for key, value in case["phases"].items()}
        # What the load phases do not cover of the manager's part: its start, the first poll, publishing.
        loads = sum(v for k, v in phases.items() if k.startswith("load."))
        other = f"{phases['models'] - loads:.2f}" if "models" in phases else ""
        where = {"tensorflow": "TensorFlow alone", "local": "rtserve, folder", "s3": "rtserve, S3 (moto)"}
        rows.append(
            [
                titles.get(case["model"], case["model"]),
                where.get(case["source"], case["source"]),
                f"{case['median_s']:.2f}",
                f"{case['median_s'] / baseline['median_s']:.2f}x" if baseline else "",
                _cpu(case, baseline),
                *(f"{phases[key]:.2f}" if key in phases else "" for key, _ in COLDSTART_COLUMNS),
                other,
            ]
        )
    header = [
        "model",
        "what",
        "exec to ready s",
        "vs TF",
        "CPU s (vs TF)",
        *(title for _, title in COLDSTART_COLUMNS),
        "other s",
    ]
    lines = _table(header, rows)
    lines += [
        "",
        f"Medians of {coldstart['runs']} fresh processes per row, pinned to CPU {coldstart['cpus']}, the cases "
        f"interleaved run by run (`python -m bench.coldstart`). TensorFlow alone: `import tensorflow as tf; "
        f"tf.saved_model.load(DIR)`, exec to the line printed after the load. rtserve: `rtserve serve`, exec to "
        f"`GET /v1/models/M` answering AVAILABLE (polled every {coldstart['poll_s'] * 1000:.0f} ms from another "
        "CPU), its split read from its own `rtserve_startup_phase_seconds` and `rtserve_model_load_phase_seconds`; "
        "other = the manager's part the load phases do not cover (its start, the first poll). CPU s: user + "
        "system time of the process by then, less sensitive than the wall time to other work on the machine.",
    ]
    return lines


def _cpu(case: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    if "median_cpu_s" not in case:
        return ""
    ratio = (
        f" ({case['median_cpu_s'] / baseline['median_cpu_s']:.2f}x)" if baseline and "median_cpu_s" in baseline else ""
    )
    return f"{case['median_cpu_s']:.2f}{ratio}"


def _noise_line(results: dict[str, Any]) -> str:
    others = sorted(
        run.get("other_cpu_pct", 0.0)
        for entry in results["lanes"]
        if entry.get("status") == "ok"
        for measured in entry["payloads"].values()
        for run in (*measured["closed"], *measured["open"])
    )
    if not others:
        return "* Noise: no runs."
    noisy = sum(1 for value in others if value > NOISY_PCT)
    quiet = results.get("quiet", {})
    return (
        f"* Noise: CPU used by everything but the server and the generator during a run (kernel loopback work "
        f"included) was {others[len(others) // 2]:.0f}% of a core at the median, {others[-1]:.0f}% at most; "
        f"{noisy} of {len(others)} runs above {NOISY_PCT:.0f}%. Before each server the bench waited up to "
        f"{quiet.get('each_s', 0):.0f} s (at most {quiet.get('budget_s', 0):.0f} s in all) for other processes to "
        f"use less than a quarter of a core; {quiet.get('waited_s', 0):.0f} s waited in all. A run during which "
        f"others used more than 15% of a core was measured again (up to twice; the quietest kept): "
        f"{quiet.get('runs_measured_again', 0)} runs were."
    )


def render(results: dict[str, Any], plot_name: str) -> str:
    m, plan, v = results["machine"], results["plan"], results["versions"]
    rt = results["rtserve"]
    dirty = (
        f", plus uncommitted changes in {rt['service_files_changed']} files of service/"
        if rt["service_files_changed"]
        else ""
    )
    if rt.get("settings"):
        dirty += "; rtserve settings: " + ", ".join(f"`{name}={value}`" for name, value in rt["settings"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`{results['command']}`) on {results.get('started_utc', results['started'])}, "
        f"rtserve at commit "
        f"`{rt['commit']}`{dirty}; {results['elapsed_s'] / 60:.0f} minutes. Everything below comes from that one run "
        "on one machine: re-run `make bench` to regenerate this page (`bench/results/` keeps the raw JSON).",
        "",
        "## Targets",
        "",
        "Ratios from the same run (issue 4).",
        "",
    ]
    lines += _table(
        ["target", "measured", "ratio", "verdict"],
        [[t["target"], t["measured"], t["ratio"], _verdict(t["ok"])] for t in targets(results)],
    )
    lines += issue13_section(results)
    asgi = closed_run(results, "floor-asgi", "tfserving", 1, TARGET_CONCURRENCY)
    fastapi = closed_run(results, "floor-fastapi", "tfserving", 1, TARGET_CONCURRENCY)
    if asgi and fastapi:
        lines += [
            "",
            f"For reference: the bare ASGI floor answers {asgi['rps'] / fastapi['rps']:.2f}x the requests "
            f"per second of the same work through FastAPI (1 row, c={TARGET_CONCURRENCY}).",
        ]
    lines += ["", f"![throughput and open-loop latency]({plot_name})", "", "## Setup", ""]
    lines += [
        f"* Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Linux {m['kernel']}, "
        f"Python {m['python']}.",
        f"* CPU pinning (taskset): every server on CPU {plan['server_cpus']}, the load generator on CPU "
        f"{plan['client_cpus']}, so the generator never takes the server's CPU and every server gets the same one "
        "core. The in-process rate is measured on the server's CPU too. rtserve sizes TensorFlow's pools to the "
        "CPUs it may use (1 here); the in-process measurement does the same.",
        "* Model: the demo SavedModel (`rtserve demo-model`, signature `serving_default`: `features` float32 [-1,4] ->"
        " `probabilities` float32 [-1,3]), one folder served by every server. Every lane's answers to the 1-row and "
        "64-row requests were checked against the in-process probabilities (max abs difference 1e-4) before its "
        "load; the floors answer without a model.",
        f"* Closed loop: wrk, 1 thread, c connections, {plan['seconds']:g} s per run after a {plan['warmup_seconds']:g}"
        " s warm-up at c=8; a run's errors are connect/read/write errors, timeouts (20 s) and non-2xx answers. "
        "Between runs the bench waits until the server's CPU is idle (what a run left queued is done).",
        f"* Open loop: `bench/loadgen/openloop.c` (ours, compiled with gcc at bench time): request i is due at "
        f"t0 + i/rate; its latency runs from that intended time to the answer's last byte (a stalled server cannot "
        f"hide the requests queued behind it); keep-alive connections, one request in flight each, up to 256. "
        f"Offered rates are fractions {', '.join(f'{f:g}' for f in plan['open_fractions'])} of the lane's best "
        f"closed-loop rate (the maximum sustainable rate), {plan['open_seconds']:g} s each. The send-delay column "
        "shows the generator kept up: it is the delay between a request's intended time and its send (it grows "
        "only when all connections are busy, which is the server being slow, not the generator).",
        '* Payloads: 1 row and 64 rows of fixed Iris-like measurements; TF Serving REST `{"instances": ...}` '
        "(also KServe V1, the seed design and the floors), V2 JSON, V2 binary (JSON header + little-endian float32"
        " rows, output asked for as binary).",
        f"* Load generators: {results['tools']['wrk']}; {results['tools']['gcc']}"
        + (f"; {results['tools']['h2load']}." if results["tools"].get("h2load") else "."),
        "* gRPC lanes (TF Serving `PredictionService/Predict` with `tf.make_tensor_proto` inputs, V2 `ModelInfer` with"
        " `raw_input_contents`): h2load replays one framed unary call (5-byte prefix + message, `content-type: "
        "application/grpc`, `te: trailers`) on HTTP/2 to the server's gRPC port. Closed loop: c concurrent calls as "
        "ceil(c/8) connections x up to 8 streams each (one gRPC channel multiplexes its calls), same duration as wrk;"
        " open loop: `--rps` on 4 connections with 256 streams each, latency from each call's send (h2load has no "
        "intended-time clock; the open-loop table shows the peak of calls in flight, below the stream budget no call "
        "waited for a stream).",
        _noise_line(results),
        "",
    ]
    version_of = {
        "rtserve": "rtserve",
        "floor-asgi": "rtserve",
        "floor-fastapi": "rtserve",
        "kserve": "kserve",
        "seed": "kserve",
        "mlserver": "mlserver",
        "mlserver-batching": "mlserver",
        "rtserve-before": "rtserve",
        "pytriton": "pytriton",
    }
    server_rows = []
    for name, info in results["servers"].items():
        venv = version_of.get(name, "")
        packages = ", ".join(f"{p} {ver}" for p, ver in v.get(venv, {}).items())
        where = "`.venv` (rtserve's)" if venv == "rtserve" else f"`bench/.venvs/{venv}`"
        server_rows.append([info["title"], info["how"], where, packages])
    lines += _table(["server", "how it runs", "virtualenv", "versions"], server_rows)
    lines += ["", "## Closed loop (wrk; h2load for the gRPC lanes)", ""]
    for rows in (1, 64):
        lines += [f"### {rows} row{'s' if rows > 1 else ''} per request", ""]
        lines += _closed_tables(results, rows)
        lines.append("")
    lines += ["## gRPC answers", ""]
    lines += _grpc_section(results)
    lines += ["", "## Open loop (latency from the intended send time)", ""]
    lines += _open_table(results)
    lines += [
        "",
        "## The model in-process",
        "",
        f"The runtime's servable `.run` called directly, one caller, TensorFlow threads: "
        f"{results['inprocess']['tensorflow_threads']}, per signature runner (the first, the server's default, "
        "is the bound the tables above use).",
        "",
    ]
    lines += _table(
        ["runner", "batch rows", "calls/s", "rows/s"],
        [
            [r.get("runner", "function"), r["rows"], f"{r['calls_per_s']:,.0f}", f"{r['rows_per_s']:,.0f}"]
            for r in results["inprocess"]["rates"]
        ],
    )
    lines += ["", "## Compute-bound case: a small CNN", ""]
    lines += _compute_bound_section(results)
    lines += ["", "## rtserve memory across a version swap", ""]
    lines += _memory_section(results)
    lines += ["", "## Cold start", ""]
    lines += coldstart_section(results)
    lines += ["", "## Profile: rtserve under load", ""]
    lines += _profile_section(results)
    skipped = _skipped_table(results)
    if skipped:
        lines += ["", "## Lanes not measured", "", *skipped]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench            # full run, rewrites this page",
        ".venv/bin/python -m bench.run --quick   # smoke run into bench/results/",
        "```",
        "",
        "Peers' virtualenvs are created on the first run from `bench/requirements/*.lock.txt`.",
        "",
    ]
    return "\n".join(lines)


START = "<!-- generated by bench/report.py from one `make bench` run: edits between these markers are replaced -->"
END = "<!-- end of the generated part; sections below it are kept as they are -->"


def merge(existing: str, generated: str) -> str:
    """The generated block in place of the previous one; anything else in the file (hand-written sections) kept."""
    block = f"{START}\n{generated.rstrip()}\n{END}\n"
    if START in existing and END in existing:
        before, rest = existing.split(START, 1)
        after = rest.split(END, 1)[1].strip()
    else:
        before, after = "", existing.strip()
    return before + block + (f"\n{after}\n" if after else "")


def write(results: dict[str, Any], results_file: Path, markdown: Path, plot: Path) -> None:
    markdown.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(envs.ensure("tools")), str(envs.BENCH_DIR / "plot.py"), str(results_file), str(plot)],
        check=True,
        timeout=300,
    )
    existing = markdown.read_text(encoding="utf-8") if markdown.exists() else ""
    markdown.write_text(merge(existing, render(results, plot.name)), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.report")
    parser.add_argument("results", nargs="?", default=str(envs.BENCH_DIR / "results" / "latest.json"))
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks.md instead of next to the JSON")
    args = parser.parse_args()
    results_file = Path(args.results)
    results = json.loads(results_file.read_text(encoding="utf-8"))
    prof = results.get("profile") or {}
    raw = results_file.with_name(prof.get("raw_file", "")) if prof.get("raw_file") else None
    if raw and raw.is_file():  # summarised again, so a newer summariser applies to older runs
        results["profile"] = {**prof, **summarise(raw.read_text(encoding="utf-8"))}
    if args.docs:
        docs = envs.BENCH_DIR.parent / "docs"
        markdown, plot = docs / "benchmarks.md", docs / "benchmarks.png"
    else:
        markdown, plot = results_file.with_name("benchmarks.md"), results_file.with_name("benchmarks.png")
    write(results, results_file, markdown, plot)
    print("\n".join([str(markdown), *verdict_lines(results)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
