"""The two load generators, both C, both on the client CPUs, both to 127.0.0.1 only.

* closed loop: ``wrk`` (Debian's package) with ``loadgen/post.lua``: N connections, each sends its next request
  when the previous answer arrives; throughput and latency percentiles.
* open loop: ``loadgen/openloop.c`` (compiled here with gcc): requests due at a fixed rate whatever the server
  does, latency measured from each request's intended send time.
* gRPC lanes, both loops: ``h2load`` (Debian's nghttp2-client) replaying one framed unary gRPC request on HTTP/2
  (see bench/grpc_payloads.py): closed loop with C clients x M concurrent streams, open loop with ``--rps``. h2load
  counts an HTTP 200 as a success even when the gRPC status in the trailers is an error, and an error answer
  carries no message: so a run's good answers are its received DATA bytes over one good answer's framed size.

Each run also records the server's CPU use (its /proc stat) and the generator's own (rusage), so a run where the
generator, not the server, was the limit would show it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.servers import Running

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
OPENLOOP_SOURCE = LOADGEN_DIR / "openloop.c"
OPENLOOP_BINARY = BENCH_DIR / "build" / "openloop"
WRK_TIMEOUT = "20s"
SETTLE_MAX_S = 45.0
OPENLOOP_MAX_CONNECTIONS = 256
APT_TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client"}  # command -> Debian package


def ensure_tools() -> dict[str, str]:
    """wrk and h2load installed (apt, as root) and openloop compiled; their versions for the report."""
    missing = [package for tool, package in APT_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, timeout=600)
    OPENLOOP_BINARY.parent.mkdir(parents=True, exist_ok=True)
    if not OPENLOOP_BINARY.exists() or OPENLOOP_BINARY.stat().st_mtime < OPENLOOP_SOURCE.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(OPENLOOP_BINARY), str(OPENLOOP_SOURCE)],
            check=True,
            timeout=120,
        )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=30, check=False)
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=30, check=True)
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=30, check=False)
    return {
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0],
        "gcc": gcc.stdout.splitlines()[0],
        "h2load": h2load.stdout.strip(),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine has spent busy so far (/proc/stat), all processes and the kernel."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_load_pct(seconds: float = 1.0) -> float:
    """CPU use of the whole machine over ``seconds``, in % of one core (the bench itself is idle meanwhile)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return 100 * (machine_busy_seconds() - before) / seconds


def measured(
    server: Running, command: list[str], env: dict[str, str] | None, timeout: float
) -> tuple[str, dict[str, float]]:
    client_before, server_before = _children_cpu(), server.cpu_seconds()
    machine_before, start = machine_busy_seconds(), time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    wall = time.monotonic() - start
    usage = {
        "server_cpu_pct": 100 * (server.cpu_seconds() - server_before) / wall,
        "client_cpu_pct": 100 * (_children_cpu() - client_before) / wall,
    }
    # Whatever else ran on the machine meanwhile (kernel work for loopback traffic included): a noisy run shows.
    machine_pct = 100 * (machine_busy_seconds() - machine_before) / wall
    usage["other_cpu_pct"] = max(0.0, machine_pct - usage["server_cpu_pct"] - usage["client_cpu_pct"])
    if completed.returncode != 0:
        raise RuntimeError(f"{command[3]} failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout, usage


def closed_loop(
    server: Running, path: str, body_file: Path, headers: dict[str, str], connections: int, seconds: float, cpus: str
) -> dict[str, Any]:
    env = {
        "BENCH_BODY": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items()),
        "PATH": "/usr/bin:/bin",
    }
    command = [
        "taskset",
        "-c",
        cpus,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(LOADGEN_DIR / "post.lua"),
        f"http://127.0.0.1:{server.port}{path}",
    ]
    stdout, usage = measured(server, command, env, seconds + 90)
    line = next((line for line in stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {stdout[-2000:]}")
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    errors = raw["errors"]
    ok = raw["requests"] - errors["status"]
    return {
        "connections": connections,
        "duration_s": duration,
        "requests": raw["requests"],
        "ok": ok,
        "rps": ok / duration,
        "errors": errors,
        "error_count": sum(errors.values()),
        "latency_ms": {key: value / 1000 for key, value in raw["latency_us"].items()},
        **usage,
    }


def open_loop(
    server: Running,
    path: str,
    body_file: Path,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    cpus: str,
    drain_s: float,
) -> dict[str, Any]:
    command = [
        "taskset",
        "-c",
        cpus,
        str(OPENLOOP_BINARY),
        "-a",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-u",
        path,
        "-b",
        str(body_file),
        "-r",
        f"{rate:.3f}",
        "-d",
        f"{seconds:g}",
        "-t",
        f"{drain_s:g}",
        "-c",
        str(OPENLOOP_MAX_CONNECTIONS),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    stdout, usage = measured(server, command, None, seconds + drain_s + 60)
    raw: dict[str, Any] = json.loads(stdout)
    latency = {key: value / 1000 for key, value in raw.pop("latency_us").items()}
    delay = {key: value / 1000 for key, value in raw.pop("dispatch_delay_us").items()}
    return {**raw, "latency_ms": latency, "dispatch_delay_ms": delay, **usage}


def settle(server: Running, idle_pct: float = 5.0, window_s: float = 0.25) -> float:
    """Wait (bounded) until the server's CPU use drops below ``idle_pct``: what a run left queued is done."""
    start = time.monotonic()
    while time.monotonic() - start < SETTLE_MAX_S and server.alive():
        before = server.cpu_seconds()
        time.sleep(window_s)
        if 100 * (server.cpu_seconds() - before) / window_s < idle_pct:
            break
    return time.monotonic() - start
