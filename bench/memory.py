"""Resident memory of one rtserve process: at idle, and at its peak while a new version replaces the old one.

A fresh rtserve serves a copy of the model folder (repository polled every 0.5 s). After a short warm-up load it
is sampled at idle; then ``rtserve push DIR/iris/1 --model iris --repository DIR`` publishes version 2 while a
thread reads ``/proc/<pid>/status`` (VmRSS, VmHWM) every 5 ms and a light open-loop load (200 req/s) keeps
asking, until version 2 is available and version 1 is unloaded (gone or END); then version 3 replaces version 2
the same way, and 3 s more pass. The second swap shows whether memory given up by the first is used again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench import loads, servers
from service.states import VersionState

SAMPLE_PERIOD_S = 0.005
SWAP_TIMEOUT_S = 120.0
SETTLE_AFTER_S = 3.0
# Two swaps: the second shows whether the memory the first gave up is used again or the process keeps growing.
SWAPS = 2
LOAD_RATE = 200.0


def status_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


class Sampler(threading.Thread):
    def __init__(self, pid: int, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit_s = pid, limit_s
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set() and time.monotonic() - start < self.limit_s:
            try:
                self.samples.append((time.monotonic() - start, status_kib(self.pid)["VmRSS"]))
            except (OSError, KeyError):
                return
            time.sleep(SAMPLE_PERIOD_S)


def _versions(port: int) -> dict[str, str]:
    status, body, _ = servers.request(port, f"/v1/models/{servers.MODEL}", b"", {}, timeout=5.0, method="GET")
    if status != 200:
        return {}
    return {item["version"]: item["state"] for item in json.loads(body)["model_version_status"]}


def _swap(port: int, repository: Path, version: int, sampler: Sampler) -> dict[str, Any]:
    """Publish ``version`` (a copy of version 1) and wait until it is AVAILABLE and the one before it is gone."""
    first = len(sampler.samples)
    pushed_at = time.monotonic()
    source = repository / servers.MODEL / "1"
    push = subprocess.run(
        [str(servers.RTSERVE), "push", str(source), "--model", servers.MODEL, "--repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=servers.server_environment(),
    )
    seconds = None
    versions: dict[str, str] = {}
    previous = str(version - 1)
    while time.monotonic() - pushed_at < SWAP_TIMEOUT_S and push.returncode == 0:
        versions = _versions(port)
        if versions.get(str(version)) == VersionState.AVAILABLE and versions.get(previous) in (None, VersionState.END):
            seconds = time.monotonic() - pushed_at
            break
        time.sleep(0.05)
    time.sleep(1.0)
    during = [rss for _, rss in sampler.samples[first:]]
    return {
        "version": version,
        "push": (push.stdout + push.stderr).strip()[-500:],
        "seconds": seconds,
        "versions_after": versions,
        "rss_peak_mib": max(during, default=0) / 1024,
        "rss_after_mib": (during[-1] if during else 0) / 1024,
    }


def measure(
    model_dir: Path, workdir: Path, server_cpus: str, client_cpus: str, probe: tuple[str, bytes, dict[str, str]]
) -> dict[str, Any]:
    repository = workdir / "memory-repository"
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(model_dir, repository / servers.MODEL / "1")
    spec = next(spec for spec in servers.SERVERS if spec.name == "rtserve")
    running = servers.start(spec, repository, workdir, server_cpus, probe, ("--poll-interval-s", "0.5"))
    path, body, headers = probe
    body_file = workdir / "memory-probe.body"
    body_file.write_bytes(body)
    try:
        rss_started = status_kib(running.pid)
        loads.closed_loop(running, path, body_file, headers, 8, 2.0, client_cpus)  # warm the hot path
        loads.settle(running)
        time.sleep(1.0)
        idle = status_kib(running.pid)

        sampler = Sampler(running.pid, SWAPS * SWAP_TIMEOUT_S + 30)
        load_seconds = 6.0 * SWAPS
        results: list[dict[str, Any]] = []

        def light_load() -> None:
            results.append(loads.open_loop(running, path, body_file, headers, LOAD_RATE, load_seconds, client_cpus, 5))

        load = threading.Thread(target=light_load, daemon=True)
        sampler.start()
        load.start()
        time.sleep(1.0)
        swaps = [_swap(running.port, repository, version, sampler) for version in range(2, 2 + SWAPS)]
        time.sleep(SETTLE_AFTER_S)
        sampler.stop_event.set()
        sampler.join(10)
        load.join(load_seconds + 30)
        after = status_kib(running.pid)
        peak = max((rss for _, rss in sampler.samples), default=0)
        return {
            "rss_started_mib": rss_started["VmRSS"] / 1024,
            "rss_idle_mib": idle["VmRSS"] / 1024,
            "hwm_before_swap_mib": idle["VmHWM"] / 1024,
            "rss_peak_during_swap_mib": peak / 1024,
            "hwm_after_swap_mib": after["VmHWM"] / 1024,
            "rss_after_swap_mib": after["VmRSS"] / 1024,
            "swaps": swaps,
            "samples": len(sampler.samples),
            "swap_seconds": swaps[0]["seconds"],
            "versions_after": swaps[-1]["versions_after"],
            "load_during_swap": results[0] if results else None,
            "rss_trace_mib": [
                (round(t, 3), rss / 1024) for t, rss in sampler.samples[:: max(1, len(sampler.samples) // 400)]
            ],
        }
    finally:
        running.stop()
