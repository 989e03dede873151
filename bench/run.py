"""``make bench``: rtserve, its peers and the floors under the same load, side by side, in one invocation.

    .venv/bin/python -m bench.run            # the full benchmark (about 30 min), writes docs/benchmarks.md
    .venv/bin/python -m bench.run --quick    # a smoke run (a few minutes), results/ only
    .venv/bin/python -m bench.run --servers rtserve,kserve,mlserver,mlserver-batching --lanes grpc,v2-binary

What it does, in order: creates the peers' virtualenvs on first use (bench/.venvs, see bench/envs.py), installs
wrk and h2load and compiles the open-loop generator; writes the demo model once (every server serves that same folder);
measures the model's in-process call rate; then starts each server in turn, pinned to the server CPU, checks
every lane's answer against the in-process probabilities (a gRPC lane's with grpcio's client), and drives it from
the client CPU (wrk and openloop for REST, h2load for gRPC, bench/h2load.py): closed loop at each concurrency, then
open loop at fractions of the best closed-loop rate; profiles rtserve under load with py-spy;
measures rtserve's memory across a version swap; writes ``bench/results/<time>/results.json`` and renders the
report (table, plot, targets) into docs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np

from bench import (
    before,
    cnnbench,
    cnnmodel,
    coldstart,
    envs,
    grpc_payloads,
    h2load,
    loads,
    memory,
    payloads,
    profile,
    report,
    servers,
)

log = logging.getLogger("bench")

RESULTS_DIR = envs.BENCH_DIR / "results"
DOCS_DIR = servers.REPO_ROOT / "docs"
ROW_COUNTS = (1, 64)
TOLERANCE = 1e-4
OPEN_MIN_REQUESTS, OPEN_MAX_SECONDS = 40, 20.0
QUIET_PCT, NOISY_PCT, RETRIES = 25.0, 15.0, 2
SERVER_VENVS = {
    "kserve": "kserve",
    "seed": "kserve",
    "mlserver": "mlserver",
    "mlserver-batching": "mlserver",
    "pytriton": "pytriton",
}
LARGE_WEIGHTS_MIB = 256  # the memory measurement's second model: large enough to see two versions, or one


@dataclass(frozen=True)
class Case:
    """What one pass over the servers serves and checks: the model (by name), the rows per request it measures,
    the answers' tolerance, and MLServer's batching settings when they are not the Iris ones."""

    model: str = servers.MODEL
    counts: tuple[int, ...] = ROW_COUNTS
    tolerance: float = TOLERANCE
    mlserver_batching: dict[str, float] | None = None


IRIS = Case()
CNN = Case(cnnbench.MODEL, cnnbench.IMAGES, cnnbench.TOLERANCE, cnnbench.MLSERVER_BATCHING)


@dataclass(frozen=True)
class Plan:
    quick: bool
    seconds: float
    open_seconds: float
    warmup_seconds: float
    concurrencies: tuple[int, ...]
    open_fractions: tuple[float, ...]
    drain_seconds: float
    inprocess_seconds: float
    profile_seconds: float
    server_cpus: str
    client_cpus: str


def make_plan(args: argparse.Namespace) -> Plan:
    chosen = tuple(int(c) for c in args.concurrencies.split(",")) if args.concurrencies else None
    if args.quick:
        return Plan(True, 2, 2, 1, chosen or (32,), (0.5,), 3, 1, 3, args.server_cpus, args.client_cpus)
    return Plan(
        False,
        args.seconds,
        args.seconds,
        2,
        # The targets read c=1, c=32 and the open loop at half the maximum rate; more points made one run of every
        # server and lane longer than an hour on this machine (pass --concurrencies for the others).
        chosen or (1, 32),
        (0.5,),
        5,
        3,
        8,
        args.server_cpus,
        args.client_cpus,
    )


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    os_release = Path("/etc/os-release").read_text(encoding="utf-8")
    pretty = next(
        (line.split("=", 1)[1].strip('"') for line in os_release.splitlines() if line.startswith("PRETTY")), ""
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "os": pretty,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_state() -> dict[str, Any]:
    def git(*arguments: str) -> str:
        result = subprocess.run(["git", *arguments], capture_output=True, text=True, timeout=30, check=False)
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "service").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "service_files_changed": len(changed)}


def versions(names: set[str]) -> dict[str, dict[str, str]]:
    wanted = {
        "rtserve": ("tensorflow", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "numpy"),
        "kserve": (
            "kserve",
            "tensorflow",
            "keras",
            "flask",
            "werkzeug",
            "fastapi",
            "starlette",
            "uvicorn",
            "uvloop",
            "orjson",
            "numpy",
        ),
        "mlserver": ("mlserver", "tensorflow", "fastapi", "starlette", "uvicorn", "uvloop", "orjson", "numpy"),
        "tools": ("matplotlib", "py-spy"),
        "pytriton": ("nvidia-pytriton", "tensorflow-cpu", "tritonclient", "numpy"),
    }
    return {name: envs.freeze(name, packages) for name, packages in wanted.items() if name in names}


def bench_module_environment() -> dict[str, str]:
    """For ``python -m bench.<module>`` subprocesses: the servers' environment, with bench importable."""
    return dict(servers.server_environment(), PYTHONPATH=str(servers.REPO_ROOT))


def write_large_model(destination: Path) -> Path:
    """bench/bigmodel.py's SavedModel (the demo signature, LARGE_WEIGHTS_MIB of weights), written once."""
    if not (destination / "saved_model.pb").is_file():
        command = [sys.executable, "-m", "bench.bigmodel", str(destination), "--mib", str(LARGE_WEIGHTS_MIB)]
        env = bench_module_environment()
        subprocess.run(command, capture_output=True, text=True, timeout=600, check=True, env=env)
    return destination


def run_inprocess(model_dir: Path, plan: Plan, options: tuple[str, ...] = ()) -> dict[str, Any]:
    command = [
        "taskset",
        "-c",
        plan.server_cpus,
        sys.executable,
        "-m",
        "bench.inprocess",
        str(model_dir),
        "--batches",
        "1,8,32,64",
        "--seconds",
        f"{plan.inprocess_seconds:g}",
        *options,
    ]
    env = bench_module_environment()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True, env=env)
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def run_cnn(
    selection: list[tuple[servers.ServerSpec, tuple[servers.Lane, ...]]], workdir: Path, plan: Plan, quiet: Quiet
) -> dict[str, Any]:
    """The compute-bound case (bench/cnnbench.py): the CNN written once, its in-process rate by batch size, then
    each selected server started on it alone and its CNN lanes measured closed-loop at c=1 and c=32 only."""
    folder = workdir / "cnn"
    model_dir = folder / "models" / cnnbench.MODEL / "1"
    command = [sys.executable, "-m", "bench.cnnmodel", str(model_dir)]
    subprocess.run(command, capture_output=True, text=True, timeout=600, check=True, env=bench_module_environment())
    bodies = cnnbench.bodies()
    body_files = {}
    for (protocol, count), payload in bodies.items():
        body_files[(protocol, count)] = folder / f"{protocol}-{count}.body"
        body_files[(protocol, count)].write_bytes(payload.body)
    quiet.wait("the CNN's in-process measurement")
    log.info("in-process call rate of the CNN (pinned to CPU %s)", plan.server_cpus)
    counts = ",".join(str(count) for count in cnnbench.IMAGES)
    # The later --batches wins over run_inprocess's own.
    options = (
        "--case",
        "cnn",
        "--runners",
        "session",
        "--batches",
        cnnbench.INPROCESS_BATCHES,
        "--reference-rows",
        counts,
    )
    inprocess = run_inprocess(model_dir, plan, options)
    for rate in inprocess["rates"]:
        log.info("  batch %3d: %8.0f calls/s  %9.0f rows/s", rate["rows"], rate["calls_per_s"], rate["rows_per_s"])
    concurrencies = tuple(c for c in plan.concurrencies if c in cnnbench.CONCURRENCIES) or plan.concurrencies
    cnn_plan = replace(plan, concurrencies=concurrencies, open_fractions=())
    lanes: list[dict[str, Any]] = []
    for spec, chosen in selection:
        quiet.wait(f"{spec.title} (CNN)")
        references = inprocess["references"]
        repository = model_dir.parent.parent
        measured, _ = run_server(spec, repository, folder, bodies, body_files, references, cnn_plan, quiet, chosen, CNN)
        lanes.extend(measured)
    return {
        "model": cnnmodel.describe(),
        "images_per_request": list(cnnbench.IMAGES),
        "concurrencies": list(concurrencies),
        "mlserver_batching": cnnbench.MLSERVER_BATCHING,
        "inprocess": inprocess,
        "lanes": lanes,
    }


class Quiet:
    """Other processes on the machine (other sessions' tests, say) make a run noisy: this waits for quiet before
    a server starts, and measures a run again when others took CPU during it. Both bounded: per call and in all.
    """

    def __init__(self, each_s: float, budget_s: float, retries: int) -> None:
        self.each_s, self.budget_s, self.retries_left = each_s, budget_s, retries
        self.waited_s = 0.0
        self.retried = 0
        self.readings: list[float] = []

    def wait(self, why: str) -> float:
        start = time.monotonic()
        load = loads.other_load_pct()
        while load > QUIET_PCT and time.monotonic() - start < self.each_s and self.waited_s < self.budget_s:
            log.warning("before %s: other processes use %.0f%% of a core; waiting for the machine to quiet", why, load)
            load = loads.other_load_pct(5.0)
            self.waited_s += 5.0
        self.readings.append(load)
        return load

    def measure(self, what: str, run_once: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``run_once()``, again (up to RETRIES times) while others used more than NOISY_PCT; the quietest run."""
        best: dict[str, Any] | None = None
        for attempt in range(1 + RETRIES):
            run = run_once()
            run["attempt"] = attempt + 1
            if best is None or run["other_cpu_pct"] < best["other_cpu_pct"]:
                best = run
            if run["other_cpu_pct"] <= NOISY_PCT or self.retries_left <= 0 or attempt == RETRIES:
                break
            self.retries_left -= 1
            self.retried += 1
            log.warning("  %s: others used %.0f%% of a core meanwhile; measuring again", what, run["other_cpu_pct"])
            self.wait(what)
        assert best is not None
        return best


def _wrong(got: np.ndarray, references: Any, rows: int, tolerance: float = TOLERANCE) -> str:
    """Why an answer differs from the in-process probabilities for ``rows`` rows ("" when it does not)."""
    expected = np.asarray(references[str(rows)], dtype=np.float32)
    if got.shape != expected.shape or float(np.max(np.abs(got - expected))) > tolerance:
        return f"{rows} rows: got {got.tolist()[:2]}, expected {expected.tolist()[:2]}"
    return ""


def check_lane(
    running: servers.Running,
    lane: servers.Lane,
    bodies: dict[tuple[str, int], payloads.Payload],
    references: Any,
    case: Case = IRIS,
) -> tuple[str, str, dict[int, int]]:
    """("ok", "", answer sizes) or (status, why, {}) for a lane, from one request per payload size.

    The answer sizes (a gRPC lane's framed good answer, in bytes, by rows) let bench.h2load tell good answers from
    gRPC errors, which h2load counts as HTTP 200s.
    """
    if lane.kind == "grpc":
        return check_grpc_lane(running, lane, bodies, references, case)
    for rows in case.counts:
        payload = bodies[(lane.protocol, rows)]
        status, body, headers = servers.request(running.port, lane.path, payload.body, payload.headers)
        if status != 200:
            why = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            if lane.protocol == "v2-binary" and status in (400, 415, 422):
                return "not supported", why, {}
            return "error", why, {}
        if not lane.verify:
            continue
        try:
            got = payloads.decode(lane.protocol, body, headers)
        except ValueError as error:
            return "error", str(error), {}
        wrong = _wrong(got, references, rows, case.tolerance)
        if wrong:
            return "wrong answer", wrong, {}
    return "ok", "", {}


def check_grpc_lane(
    running: servers.Running,
    lane: servers.Lane,
    bodies: dict[tuple[str, int], payloads.Payload],
    references: Any,
    case: Case = IRIS,
) -> tuple[str, str, dict[int, int]]:
    """check_lane for a gRPC lane: one call per payload size with grpcio's client, the answer decoded with the
    protocol's own messages. A server without the service or method answers UNIMPLEMENTED: "not supported"."""
    if running.grpc_port is None:
        return "not supported", "no gRPC port", {}
    sizes = {}
    for rows in case.counts:
        request = grpc_payloads.unframe(bodies[(lane.protocol, rows)].body)
        try:
            answer = grpc_payloads.call(running.grpc_port, lane.path, request)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            why = f"gRPC {code.name if code else '?'}: {(details or '')[:300]}"
            return ("not supported" if code == grpc.StatusCode.UNIMPLEMENTED else "error"), why, {}
        try:
            got = grpc_payloads.decode(lane.protocol, answer)
        except ValueError as error:
            return "error", str(error), {}
        wrong = _wrong(got, references, rows, case.tolerance) if lane.verify else ""
        if wrong:
            return "wrong answer", wrong, {}
        sizes[rows] = len(grpc_payloads.frame(answer))
    return "ok", "", sizes


def requests_by_code(exposition: str, protocol: str) -> dict[str, float]:
    """``rtserve_requests_total`` for one ``protocol`` label in a Prometheus text exposition, summed by code."""
    counts: dict[str, float] = {}
    for line in exposition.splitlines():
        if line.startswith("rtserve_requests_total{") and f'protocol="{protocol}"' in line:
            labels, _, value = line.rpartition(" ")
            code = labels.split('code="', 1)[1].split('"', 1)[0] if 'code="' in labels else "?"
            counts[code] = counts.get(code, 0.0) + float(value)
    return counts


def rtserve_counts(running: servers.Running, protocol: str) -> dict[str, float]:
    """rtserve's own request counts for one protocol label, by code, from its /metrics ({} when unreadable)."""
    status, body, _ = servers.request(running.port, "/metrics", b"", {}, method="GET")
    return requests_by_code(body.decode(errors="replace"), protocol) if status == 200 else {}


def measure_lane(
    running: servers.Running,
    lane: servers.Lane,
    body_file: Path,
    payload: payloads.Payload,
    plan: Plan,
    quiet: Quiet,
    answer_bytes: int = 0,
) -> dict[str, Any]:
    cpus = plan.client_cpus
    headers = payload.headers

    replay = h2load.Replay(running, running.grpc_port or 0, lane.path, body_file, headers, cpus, answer_bytes)

    def closed_loop(connections: int, seconds: float) -> dict[str, Any]:
        if lane.kind == "grpc":
            return h2load.closed_loop(replay, connections, seconds)
        return loads.closed_loop(running, lane.path, body_file, headers, connections, seconds, cpus)

    def open_loop(rate: float, seconds: float) -> dict[str, Any]:
        if lane.kind == "grpc":
            return h2load.open_loop(replay, rate, seconds)
        return loads.open_loop(running, lane.path, body_file, headers, rate, seconds, cpus, plan.drain_seconds)

    closed_loop(8, plan.warmup_seconds)
    loads.settle(running)
    closed = []
    for connections in plan.concurrencies:

        def closed_once(connections: int = connections) -> dict[str, Any]:
            run = closed_loop(connections, plan.seconds)
            run["settle_s"] = loads.settle(running)
            return run

        run = quiet.measure(f"{lane.name} {payload.rows} rows c={connections}", closed_once)
        log.info(
            "  %-10s %2d rows c=%-3d %9.1f req/s  p50 %7.2f ms  p99 %8.2f ms  errors %d  server cpu %3.0f%%",
            lane.name,
            payload.rows,
            connections,
            run["rps"],
            run["latency_ms"]["p50"],
            run["latency_ms"]["p99"],
            run["error_count"],
            run["server_cpu_pct"],
        )
        closed.append(run)
    clean = [run for run in closed if run["error_count"] == 0] or closed
    max_rate = max(run["rps"] for run in clean)
    opened = []
    for fraction in plan.open_fractions:
        rate = max(1.0, fraction * max_rate)
        # A slow lane (the seed design) gets a longer run, so its percentiles rest on some 40 requests at least.
        seconds = min(max(plan.open_seconds, OPEN_MIN_REQUESTS / rate), OPEN_MAX_SECONDS)

        def open_once(rate: float = rate, seconds: float = seconds) -> dict[str, Any]:
            run = open_loop(rate, seconds)
            run["settle_s"] = loads.settle(running)
            return run

        run = quiet.measure(f"{lane.name} {payload.rows} rows open {fraction:g}", open_once)
        run["fraction"] = fraction
        latency = run["latency_ms"]
        delay = run["dispatch_delay_ms"]
        log.info(
            "  %-10s %2d rows open %4.2f x %8.1f/s  p50 %7.2f ms  p99 %8.2f ms  ok %d/%d  %s",
            lane.name,
            payload.rows,
            fraction,
            max_rate,
            latency["p50"],
            latency["p99"],
            run["ok"],
            run["scheduled"],
            f"dispatch p99 {delay['p99']:.2f} ms" if delay else f"peak in flight {run.get('peak_in_flight')}",
        )
        opened.append(run)
    return {"rows": payload.rows, "closed": closed, "max_rate": max_rate, "open": opened}


def run_server(
    spec: servers.ServerSpec,
    repository: Path,
    workdir: Path,
    bodies: dict[tuple[str, int], payloads.Payload],
    body_files: dict[tuple[str, int], Path],
    references: Any,
    plan: Plan,
    quiet: Quiet,
    chosen: tuple[servers.Lane, ...] | None = None,
    case: Case = IRIS,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Start one server serving ``case``'s model, measure its ``chosen`` lanes (all by default), stop it."""
    lanes: list[dict[str, Any]] = []
    measured_lanes = spec.lanes if chosen is None else chosen
    # Ready = its REST side answers (a measured lane's, so that it asks the case's model).
    probe_lane = next(lane for lane in (*measured_lanes, *spec.lanes) if lane.kind == "rest")
    probe = bodies[(probe_lane.protocol, case.counts[0])]
    log.info("starting %s", spec.title)
    started = time.monotonic()
    try:
        running = servers.start(
            spec,
            repository,
            workdir,
            plan.server_cpus,
            (probe_lane.path, probe.body, probe.headers),
            model=case.model,
            batching=case.mlserver_batching,
        )
    except RuntimeError as error:
        log.error("%s", error)
        return [
            {"server": spec.name, "title": spec.title, "lane": lane.name, "status": "did not start", "why": str(error)}
            for lane in measured_lanes
        ], None
    profiled = None
    try:
        log.info(
            "%s ready in %.1f s (pid %d, port %d)", spec.title, time.monotonic() - started, running.pid, running.port
        )
        for lane in measured_lanes:
            entry: dict[str, Any] = {
                "server": spec.name,
                "title": spec.title,
                "lane": lane.name,
                "path": lane.path,
                "protocol": lane.protocol,
                "kind": lane.kind,
            }
            entry["status"], entry["why"], sizes = check_lane(running, lane, bodies, references, case)
            if entry["status"] != "ok":
                log.warning("%s %s: %s (%s)", spec.title, lane.name, entry["status"], entry["why"])
            else:
                counter = lane.counter if spec.name in servers.RTSERVE_VARIANTS else ""
                before = rtserve_counts(running, counter) if counter else {}
                entry["payloads"] = {}
                for rows in case.counts:
                    key = (lane.protocol, rows)
                    entry["payloads"][str(rows)] = measure_lane(
                        running, lane, body_files[key], bodies[key], plan, quiet, sizes.get(rows, 0)
                    )
                if lane.kind == "grpc":
                    entry["answer_bytes"] = {str(rows): size for rows, size in sizes.items()}
                    # The same real-client check once more: the server still answers right after the load.
                    entry["check_after"] = " ".join(check_lane(running, lane, bodies, references, case)[:2]).strip()
                if counter:
                    after = rtserve_counts(running, counter)
                    entry["server_counted"] = {code: after[code] - before.get(code, 0.0) for code in after}
            lanes.append(entry)
        if spec.name == "rtserve" and servers.TF_LANE in measured_lanes:
            log.info("profiling rtserve under load (py-spy, %g s)", plan.profile_seconds)
            tf = bodies[("tfserving", 1)]
            profiled = profile.profile(
                running,
                servers.TF_LANE.path,
                body_files[("tfserving", 1)],
                tf.headers,
                plan.profile_seconds,
                plan.client_cpus,
                workdir.parent,
            )
    finally:
        running.stop()
    return lanes, profiled


def prepare_before(chosen: list[servers.ServerSpec], ref: str) -> str:
    """When rtserve-before runs: its tree extracted (bench/before.py) and given to it; the commit ("" if not)."""
    if not any(spec.name == "rtserve-before" for spec in chosen):
        return ""
    tree = before.extract(ref, servers.REPO_ROOT)
    servers.RTSERVE_TREES["rtserve-before"] = tree
    log.info("rtserve before: %s (%s) from %s", ref, tree.name, tree)
    return tree.name.removeprefix("rtserve-")


def with_before_title(spec: servers.ServerSpec, commit: str) -> servers.ServerSpec:
    """rtserve-before titled with the commit it runs."""
    if spec.name != "rtserve-before" or not commit:
        return spec
    return dataclasses.replace(spec, title=f"rtserve before ({commit})")


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: c=32 only, 2 s per case, no docs")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (full mode)")
    parser.add_argument("--servers", help="comma-separated subset of: " + ", ".join(s.name for s in servers.SERVERS))
    parser.add_argument(
        "--lanes",
        help="comma-separated lanes to measure, by name (tfserving, v2-json, v2-binary, tfserving-grpc, v2-grpc) or"
        " kind (rest, grpc); the CNN case's (cnn-v2-binary, cnn-v2-json, cnn-v2-grpc) by name or all as cnn;"
        " default: every lane",
    )
    parser.add_argument("--concurrencies", help="closed-loop concurrencies, e.g. 1,32 (default: 1,8,32,128)")
    parser.add_argument("--server-cpus", default="0", help="CPUs for the server under test (taskset list)")
    parser.add_argument("--client-cpus", default="1", help="CPUs for the load generators")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.md (default: yes for a full run of every server)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the version-swap memory measurement")
    parser.add_argument("--no-coldstart", action="store_true", help="skip the cold-start measurement")
    parser.add_argument(
        "--rtserve-env",
        action="append",
        default=[],
        metavar="RTSERVE_NAME=VALUE",
        help="a setting for rtserve (repeatable), e.g. RTSERVE_BATCHING__MAX_BATCH_SIZE=256; no docs by default",
    )
    parser.add_argument(
        "--before-ref",
        default=servers.BEFORE_REF,
        help="the git ref rtserve-before runs (a git archive of it in bench/build/); default: issue 13's start",
    )
    args = parser.parse_args(argv)
    # Stopped from outside (SIGTERM, or SIGINT even when started in the background): unwind, so the server
    # under test is stopped by its ``finally``.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be between 1 and 60")
    for item in args.rtserve_env:
        name, _, value = item.partition("=")
        if not name.startswith("RTSERVE_") or not _:
            parser.error(f"--rtserve-env wants RTSERVE_NAME=VALUE, got {item!r}")
        servers.RTSERVE_OVERRIDES[name] = value
    plan = make_plan(args)
    chosen = [s for s in servers.SERVERS if not args.servers or s.name in args.servers.split(",")]
    wanted = set(args.lanes.split(",")) if args.lanes else None
    lanes_of = {
        s.name: tuple(lane for lane in s.lanes if wanted is None or {lane.name, lane.kind} & wanted) for s in chosen
    }
    chosen = [s for s in chosen if lanes_of[s.name]]
    before_commit = prepare_before(chosen, args.before_ref)
    chosen = [with_before_title(s, before_commit) for s in chosen]
    cnn_selection = cnnbench.selected(args.servers, wanted)
    whole = not args.servers and not args.rtserve_env and not args.lanes and not args.concurrencies
    write_docs = args.docs if args.docs is not None else (not plan.quick and whole)
    began = time.monotonic()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if plan.quick else "")
    outdir = RESULTS_DIR / stamp
    workdir = outdir / "work"
    workdir.mkdir(parents=True)
    every = [*chosen, *(spec for spec, _ in cnn_selection)]
    needed = {SERVER_VENVS[s.name] for s in every if s.name in SERVER_VENVS} | {"tools"}
    for name in sorted(needed):
        envs.ensure(name)
    tools = loads.ensure_tools()

    repository = workdir / "models"
    subprocess.run(
        [str(servers.RTSERVE), "demo-model", str(repository / servers.MODEL)],
        check=True,
        timeout=600,
        capture_output=True,
        env=servers.server_environment(),
    )
    model_dir = repository / servers.MODEL / "1"
    bodies = {(p, rows): payloads.build(p, rows) for p in payloads.PROTOCOLS for rows in ROW_COUNTS}
    for protocol in grpc_payloads.PROTOCOLS:
        for rows in ROW_COUNTS:
            bodies[(protocol, rows)] = grpc_payloads.build(protocol, rows, servers.MODEL)
    body_files = {}
    for (protocol, rows), payload in bodies.items():
        body_files[(protocol, rows)] = workdir / f"{protocol}-{rows}.body"
        body_files[(protocol, rows)].write_bytes(payload.body)

    quiet = Quiet(10, 30, 4) if plan.quick else Quiet(60, 240, 40)
    quiet.wait("the in-process measurement")
    log.info("in-process call rate of the signature (pinned to CPU %s)", plan.server_cpus)
    inprocess = run_inprocess(model_dir, plan)
    for rate in inprocess["rates"]:
        log.info(
            "  %-8s batch %2d: %8.0f calls/s  %9.0f rows/s",
            rate.get("runner", "function"),
            rate["rows"],
            rate["calls_per_s"],
            rate["rows_per_s"],
        )

    results: dict[str, Any] = {
        "started": stamp,
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            [Path(sys.executable).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "plan": asdict(plan),
        "machine": machine(),
        "rtserve": {
            **git_state(),
            "settings": dict(servers.RTSERVE_OVERRIDES),
            **({"before": {"ref": args.before_ref, "commit": before_commit}} if before_commit else {}),
        },
        "versions": versions(needed | {"rtserve"}),
        "tools": tools,
        "servers": {s.name: {"title": s.title, "how": s.how} for s in every},
        "inprocess": inprocess,
        "lanes": [],
        "profile": None,
        "memory": None,
    }
    for spec in chosen:
        quiet.wait(spec.title)
        references = inprocess["references"]
        lanes, profiled = run_server(
            spec, repository, workdir, bodies, body_files, references, plan, quiet, lanes_of[spec.name]
        )
        results["lanes"].extend(lanes)
        if profiled is not None:
            results["profile"] = profiled
    if cnn_selection:
        results["cnn"] = run_cnn(cnn_selection, workdir, plan, quiet)
    if not args.no_memory and servers.TF_LANE in lanes_of.get("rtserve", ()):
        log.info("rtserve memory across a version swap")
        tf = bodies[("tfserving", 1)]
        probe = (servers.TF_LANE.path, tf.body, tf.headers)
        big_dir = write_large_model(workdir / "large-weights" / "1")
        results["memory"] = [
            {"model": "demo model", **memory.measure(model_dir, workdir, plan.server_cpus, plan.client_cpus, probe)},
            {
                "model": f"{LARGE_WEIGHTS_MIB} MiB of weights",
                "weights_mib": LARGE_WEIGHTS_MIB,
                **memory.measure(big_dir, workdir, plan.server_cpus, plan.client_cpus, probe),
            },
        ]
    if not args.no_coldstart and "rtserve" in lanes_of:
        quiet.wait("the cold start")
        log.info("cold start: rtserve serve and TensorFlow's own import + load, fresh processes (bench/coldstart.py)")
        results["coldstart"] = coldstart.run(
            2 if plan.quick else 5, plan.server_cpus, plan.client_cpus, ["demo", "large"], workdir / "coldstart"
        )
    results["elapsed_s"] = time.monotonic() - began
    results["quiet"] = {
        "waited_s": quiet.waited_s,
        "each_s": quiet.each_s,
        "budget_s": quiet.budget_s,
        "load_before_each_pct": quiet.readings,
        "runs_measured_again": quiet.retried,
    }

    results_file = outdir / "results.json"
    results_file.write_text(json.dumps(results, indent=1), encoding="utf-8")
    shutil.copyfile(results_file, RESULTS_DIR / "latest.json")
    shutil.rmtree(workdir / "models", ignore_errors=True)
    shutil.rmtree(workdir / "pytriton-workspace", ignore_errors=True)  # PyTriton's copy of Triton (22 MB)
    log.info("results: %s (%.0f s)", results_file, results["elapsed_s"])

    markdown, plot = (
        (DOCS_DIR / "benchmarks.md", DOCS_DIR / "benchmarks.png")
        if write_docs
        else (outdir / "benchmarks.md", outdir / "benchmarks.png")
    )
    report.write(results, results_file, markdown, plot)
    log.info("report: %s", markdown)
    for line in report.verdict_lines(results):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
