"""Overload: how fast a full queue is refused, and what overload costs in memory.

The fleet test (tests/fleet/test_fleet.py::test_overload_answers_fast_503_with_bounded_memory) asserts the
behaviour: every answer is 200 or 503 with ``Retry-After``, and every replica serves normally right after. The
numbers are measured here (DESIGN.md section 10: speed and memory targets are met in benchmarks): the real server
(``python -m service serve``, the code on PYTHONPATH) serves ``slow`` from the test suite's model factory, about
20 ms of CPU per model call with ``max_queue`` 4, one TensorFlow thread; CLIENTS closed-loop clients (one
keep-alive connection each) send the demo row for SECONDS while the server's RSS is sampled every 50 ms.

Targets (once timed assertions in the fleet test): refused p50 below a third of the served p50 (refused at once,
not after queueing), refused p99 under 1 s, RSS growth under 150 MiB.

usage: python -m bench.overload [--docs] [--clients N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import servers
from bench.docs import DOCS, write_section
from bench.memory import Sampler

SECTION = "## Overload: a full queue answers 503 at once"
PATH = "/v1/models/slow:predict"
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
HEADERS = {"content-type": "application/json"}
CLIENTS = 32  # far more in flight than the server holds: 4 queued + 4 in a model call
SECONDS = 6.0
AFTER_REQUESTS = 30
# The targets, as the fleet test once asserted them.
REFUSED_SHARE_OF_SERVED_P50 = 1 / 3
REFUSED_P99_MS = 1000.0
RSS_GROWTH_MIB = 150.0


def _modelfactory() -> Any:
    """The test suite's models (tests/modelfactory.py): one source for the fleet test and this benchmark."""
    tests = str(servers.REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("modelfactory")


def _start(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = servers.free_port()
    env = servers.server_environment() | {
        "PYTHONPATH": str(servers.REPO_ROOT),
        "RTSERVE_REPOSITORY": str(root / "models"),
        "RTSERVE_CACHE_DIR": str(root / "cache"),
        "RTSERVE_HOST": "127.0.0.1",
        "RTSERVE_PORT": str(port),
        "RTSERVE_MODELS": "slow",
        "RTSERVE_LOG_REQUESTS": "false",
        "RTSERVE_TENSORFLOW__INTRA_OP_THREADS": "1",
        "RTSERVE_TENSORFLOW__INTER_OP_THREADS": "1",
        "RTSERVE_BATCHING__OVERRIDES": _modelfactory().SLOW_BATCHING,
    }
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + servers.READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if servers.request(port, "/v2/health/ready", b"", {}, 5.0, "GET")[0] == 200:
                return process, port
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, 9)
    raise RuntimeError(f"the server did not become ready; see {root / 'server.log'}")


def _clients(port: int, clients: int, seconds: float) -> list[tuple[int, float, str | None]]:
    """(status, latency s, Retry-After) of every request the closed-loop clients sent."""
    samples: list[tuple[int, float, str | None]] = []
    end = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < end:
                sent = time.monotonic()
                connection.request("POST", PATH, body=BODY, headers=HEADERS)
                response = connection.getresponse()
                response.read()
                samples.append((response.status, time.monotonic() - sent, response.getheader("retry-after")))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return samples


def _latency_ms(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1)}


def measure(clients: int = CLIENTS, seconds: float = SECONDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtserve-overload-") as folder:
        root = Path(folder)
        _modelfactory().slow_model(root / "models" / "slow" / "1")
        process, port = _start(root)
        try:
            sampler = Sampler(process.pid, seconds + 30)
            sampler.start()
            time.sleep(0.2)  # a few samples before the load: the baseline
            samples = _clients(port, clients, seconds)
            sampler.stop_event.set()
            sampler.join()
            after = [servers.request(port, PATH, BODY, HEADERS)[0] for _ in range(AFTER_REQUESTS)]
        finally:
            os.killpg(process.pid, 15)
            process.wait(30)
    rss = [kib for _, kib in sampler.samples]
    refused = [latency for status, latency, _ in samples if status == 503]
    served = [latency for status, latency, _ in samples if status == 200]
    return {
        "clients": clients,
        "seconds": seconds,
        "statuses": {str(code): sum(1 for s in samples if s[0] == code) for code in sorted({s[0] for s in samples})},
        "retry_after": sorted({str(s[2]) for s in samples if s[0] == 503}),
        "refused_503": {"count": len(refused), **_latency_ms(refused)},
        "served_200": {"count": len(served), **_latency_ms(served)},
        "rss_before_mib": round(rss[0] / 1024, 1) if rss else 0.0,
        "rss_growth_mib": round((max(rss) - rss[0]) / 1024, 1) if rss else 0.0,
        "after_ok": sum(1 for status in after if status == 200),
    }


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    refused, served = result["refused_503"], result["served_200"]
    return [
        (
            "refused p50 < served p50 / 3",
            f"{refused['p50_ms']} ms vs {served['p50_ms']} ms",
            refused["count"] > 0 and refused["p50_ms"] < served["p50_ms"] * REFUSED_SHARE_OF_SERVED_P50,
        ),
        ("refused p99 < 1 s", f"{refused['p99_ms']} ms", refused["p99_ms"] < REFUSED_P99_MS),
        ("RSS growth < 150 MiB", f"{result['rss_growth_mib']} MiB", result["rss_growth_mib"] < RSS_GROWTH_MIB),
    ]


def docs_section(result: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md for ``result``."""
    refused, served = result["refused_503"], result["served_200"]
    return "\n".join(
        [
            SECTION,
            "",
            f"`python -m bench.overload --docs` ({time.strftime('%Y-%m-%d', time.gmtime())}, this machine, 2 shared "
            f"cores): one server, the model `slow` (about 20 ms of CPU per call, `max_batch_size` 4, `max_queue` 4, "
            f"one TensorFlow thread), {result['clients']} closed-loop clients for {result['seconds']:g} s, latency "
            "measured at the client. The fleet test asserts the behaviour (200 or 503 with `Retry-After`, every "
            "replica serving right after); these are the numbers.",
            "",
            "| answers | count | p50 ms | p99 ms |",
            "|---|---|---|---|",
            f"| 503 (queue full) | {refused['count']} | {refused['p50_ms']} | {refused['p99_ms']} |",
            f"| 200 | {served['count']} | {served['p50_ms']} | {served['p99_ms']} |",
            "",
            f"RSS {result['rss_before_mib']} MiB before, grew by {result['rss_growth_mib']} MiB under overload; "
            f"{result['after_ok']} of {AFTER_REQUESTS} sequential requests right after answered 200.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *(f"| {name} | {measured} | {'yes' if met else 'NO'} |" for name, measured, met in verdicts(result)),
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS, help="closed-loop clients")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long they send")
    parser.add_argument("--docs", action="store_true", help=f"write the tables into {DOCS.name}")
    args = parser.parse_args()
    result = measure(args.clients, args.seconds)
    print(json.dumps(result, indent=2))
    for name, measured, met in verdicts(result):
        print(f"{'ok ' if met else 'MISSED'} {name}: {measured}")
    if args.docs:
        write_section(SECTION, docs_section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
