"""Liveness while the largest allowed request of each kind is decoded, run and answered.

Starts the real server (``python -m service serve``, its default limits unless overridden) on the demo model
``iris``, the test suite's string model ``multi`` and its classify/regress model ``examples``, then sends each
worst case below, one at a time, while a thread asks ``/v2/health/live`` every 20 ms on its own connection and
another sums the VmRSS of the server and its codec workers every 10 ms. Per case: the answer's status, the
request's own time, the worst and the number of liveness answers during it, and the peak RSS growth.

usage: python -m bench.liveness [--docs] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import servers
from bench.docs import DOCS, write_section

LIVE = "/v2/health/live"
PROBE_PERIOD_S = 0.02
RSS_PERIOD_S = 0.01
REQUEST_TIMEOUT_S = 600.0
SECTION = "## Liveness during the largest allowed requests"
JSON_TYPE = {"content-type": "application/json"}
MODELS = ("iris", "multi", "examples")
# Room left in a body for everything but the repeated part.
SLACK = 4096


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Limits:
    """The server's limits the cases are sized to (its Settings defaults unless overridden)."""

    body: int
    elements: int
    strings: int
    json_values: int


def _repeat(head: bytes, item: bytes, tail: bytes, count: int) -> bytes:
    """``head item,item,...,item tail`` with ``count`` items."""
    return head + item.rstrip(b",") if count == 1 else head + item * (count - 1) + item.rstrip(b",") + tail


def _fit(limits: Limits, item: bytes, values_per_item: int, elements_per_item: int = 1, cap: int = 0) -> int:
    """How many items fit under the body, JSON value and element limits (and ``cap``)."""
    count = min(
        (limits.body - SLACK) // len(item),
        (limits.json_values - 64) // values_per_item,
        limits.elements // elements_per_item,
    )
    return min(count, cap) if cap else count


def _binary(header: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    return encoded + data, {
        "inference-header-content-length": str(len(encoded)),
        "content-type": "application/octet-stream",
    }


def worst_cases(limits: Limits) -> list[Case]:
    """The largest request of each kind the limits allow (the many-names case is refused, linearly)."""
    row = b"[1.5,2.5,0.5,3.5],"
    rows = _fit(limits, row, 5, 4)
    nan_rows = _fit(limits, b"[NaN,2.5,0.5,3.5],", 5, 4)
    b64_item = b'{"ids":[1],"tokens":{"b64":"YWJjZA=="}},'
    b64_rows = _fit(limits, b64_item, 14, cap=limits.strings)  # json_io.values_bound: an object counts 4
    flat = _fit(limits, b"0.5,", 1) // 4 * 4
    binary_rows = min((limits.body - SLACK) // 16, limits.elements // 4)
    strings = min(limits.strings, (limits.body - SLACK) // 13)
    token = max(1, (limits.body - SLACK - 8 * strings) // strings - 4)
    names = _fit(limits, b'{"name":"o0000000"},', 6)
    context_features = 1000
    context = ",".join(f'"c{i}":[0.5]' for i in range(context_features))
    example_bytes = context_features * 20  # serialized size of the context (about) in each example
    examples = min(limits.elements // (context_features * 2 + 2), limits.elements * 8 // example_bytes - 1)
    examples = min(examples, limits.strings, (limits.body - SLACK - len(context)) // 10)
    iris_entry = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    name_items = b"".join(b'{"name":"o%07d"},' % i for i in range(names))
    tokens = (len(b"x" * token).to_bytes(4, "little") + b"x" * token) * strings
    ids = (1).to_bytes(8, "little") * strings
    bytes_header = {
        "inputs": [
            {"name": "ids", "shape": [strings, 1], "datatype": "INT64", "parameters": {"binary_data_size": len(ids)}},
            {
                "name": "tokens",
                "shape": [strings],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(tokens)},
            },
        ]
    }
    binary_header = {
        "inputs": [
            {
                "name": "features",
                "shape": [binary_rows, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": binary_rows * 16},
            }
        ]
    }
    binary_body, binary_headers = _binary(binary_header, b"\x00\x00\xc0\x3f" * (binary_rows * 4))
    bytes_body, bytes_headers = _binary(bytes_header, ids + tokens)
    v2_head = b'{"inputs":[{"name":"features","shape":[%d,4],"datatype":"FP32","data":[' % (flat // 4)
    return [
        Case(f"TF Serving row, {rows} x 4 floats", "/v1/models/iris:predict",
             _repeat(b'{"instances":[', row, b"]}", rows), JSON_TYPE),
        Case(f"TF Serving columnar, {rows} x 4 floats", "/v1/models/iris:predict",
             _repeat(b'{"inputs":[', row, b"]}", rows), JSON_TYPE),
        Case(f"TF Serving row with NaN, {nan_rows} x 4", "/v1/models/iris:predict",
             _repeat(b'{"instances":[', b"[NaN,2.5,0.5,3.5],", b"]}", nan_rows), JSON_TYPE),
        Case(f"TF Serving b64 strings, {b64_rows} instances", "/v1/models/multi:predict",
             _repeat(b'{"instances":[', b64_item, b"]}", b64_rows), JSON_TYPE),
        Case(f"classify, {examples} examples x {context_features} context features", "/v1/models/examples:classify",
             _repeat(b'{"signature_name":"classify","context":{' + context.encode() + b'},"examples":[',
                     b'{"x":1.0},', b"]}", examples), JSON_TYPE),
        Case(f"V2 JSON, {flat} floats", "/v2/models/iris/infer", _repeat(v2_head, b"0.5,", b"]}]}", flat), JSON_TYPE),
        Case(f"V2 binary FP32, {binary_rows} x 4", "/v2/models/iris/infer", binary_body, binary_headers),
        Case(f"V2 binary BYTES, {strings} x {token} bytes", "/v2/models/multi/infer", bytes_body, bytes_headers),
        Case(f"V2 output names, {names} (refused)", "/v2/models/iris/infer",
             b'{"inputs":[' + json.dumps(iris_entry).encode() + b'],"outputs":[' + name_items.rstrip(b",") + b"]}",
             JSON_TYPE),
    ]  # fmt: skip


def process_tree_rss_kib(pid: int, children: bool = True) -> int:
    """VmRSS of ``pid`` and (``children``) its children, the codec workers, in KiB."""
    total = 0
    pids = [pid]
    if children:
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for member in pids:
        try:
            for line in Path(f"/proc/{member}/status").read_text(encoding="ascii").splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Watcher(threading.Thread):
    """Calls ``sample`` every ``period_s`` until stopped; keeps what it returns."""

    def __init__(self, sample: Callable[[], float], period_s: float) -> None:
        super().__init__(daemon=True)
        self._sample, self._period_s = sample, period_s
        self.values: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.values.append(self._sample())
            self.stop_event.wait(self._period_s)


def liveness_probe(port: int) -> Callable[[], float]:
    """One GET of /v2/health/live on a kept-alive connection: its latency in seconds (inf on failure)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def probe() -> float:
        started = time.perf_counter()
        try:
            connection.request("GET", LIVE)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            connection.close()
            ok = False
        return time.perf_counter() - started if ok else float("inf")

    return probe


def measure(port: int, pid: int, case: Case, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    baseline = process_tree_rss_kib(pid)
    probes = Watcher(liveness_probe(port), PROBE_PERIOD_S)
    rss = Watcher(lambda: float(process_tree_rss_kib(pid)), RSS_PERIOD_S)
    probes.start()
    rss.start()
    started = time.perf_counter()
    try:
        status, body, _ = servers.request(port, case.path, case.body, case.headers, timeout=timeout_s)
    finally:
        seconds = time.perf_counter() - started
        probes.stop_event.set()
        rss.stop_event.set()
        probes.join()
        rss.join()
    return {
        "case": case.name,
        "body_mib": len(case.body) / 2**20,
        "status": status,
        "error": json.loads(body).get("error", "")[:120] if status != 200 else "",
        "request_s": seconds,
        "live_worst_s": max(probes.values, default=float("nan")),
        "live_answers": sum(1 for v in probes.values if v != float("inf")),
        "rss_growth_mib": (max(rss.values, default=baseline) - baseline) / 1024,
        "rss_before_mib": baseline / 1024,
        "main_after_mib": process_tree_rss_kib(pid, children=False) / 1024,
    }


def build_repository(root: Path) -> None:
    from service.tools.demo import write_demo_model

    sys.path.insert(0, str(servers.REPO_ROOT / "tests"))
    modelfactory: Any = importlib.import_module("modelfactory")  # the test suite's models: one source for both

    write_demo_model(root / "iris")
    modelfactory.multi_signature_module(root / "multi" / "1")
    modelfactory.regress_classify_module(root / "examples" / "1")


def limits_of(env: dict[str, str]) -> Limits:
    from service.settings import Settings

    settings = Settings(**{k.removeprefix("RTSERVE_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    return Limits(
        settings.max_body_bytes, settings.max_tensor_elements, settings.max_string_elements, settings.max_json_values
    )


def run(overrides: dict[str, str], only: str = "", repeat: int = 1) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="rtserve-liveness-") as folder:
        root = Path(folder)
        build_repository(root / "models")
        env = servers.server_environment() | overrides
        env |= {"RTSERVE_REPOSITORY": str(root / "models"), "RTSERVE_CACHE_DIR": str(root / "cache")}
        env["RTSERVE_LOG_REQUESTS"] = "false"
        env["PYTHONPATH"] = str(servers.REPO_ROOT)
        port = servers.free_port()
        env |= {"RTSERVE_HOST": "127.0.0.1", "RTSERVE_PORT": str(port), "RTSERVE_GRPC_PORT": "0"}
        command = [sys.executable, "-m", "service", "serve"]
        with (root / "server.log").open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(port, process)
            cases = worst_cases(limits_of(overrides))
            results = []
            for case in [c for _ in range(repeat) for c in cases]:
                if only not in case.name:
                    continue
                result = measure(port, process.pid, case)
                print(_row(result), flush=True)
                results.append(result)
            return results
        finally:
            os.killpg(process.pid, 15)
            process.wait(30)


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + servers.READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited while starting")
        try:
            answers = [servers.request(port, f"/v2/models/{m}/ready", b"", {}, 5, "GET")[0] for m in MODELS]
            if answers == [200] * len(MODELS):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


HEADER = (
    "| request | body MiB | status | request s | worst liveness s | liveness answers | RSS before MiB | "
    "RSS growth MiB | server alone after, MiB |\n|---|---|---|---|---|---|---|---|---|"
)


def _row(r: dict[str, Any], with_error: bool = True) -> str:
    return (
        f"| {r['case']} | {r['body_mib']:.1f} | {r['status']} | {r['request_s']:.2f} | {r['live_worst_s']:.3f} | "
        f"{r['live_answers']} | {r['rss_before_mib']:.0f} | {r['rss_growth_mib']:.0f} | {r['main_after_mib']:.0f} |"
        + (f" {r['error']}" if r["error"] and with_error else "")
    )


def write_docs(results: list[dict[str, Any]], overrides: dict[str, str]) -> None:
    settings = " ".join(f"--env {k}={v}" for k, v in overrides.items())
    section = "\n".join(
        [
            SECTION,
            "",
            f"`python -m bench.liveness --docs{' ' + settings if settings else ''}` "
            f"({time.strftime('%Y-%m-%d', time.gmtime())}, this machine, 2 shared cores): the server at its "
            "default limits; each request is the largest of its kind they allow, sent alone while "
            f"`{LIVE}` is asked every {PROBE_PERIOD_S * 1000:.0f} ms. RSS is the server plus its codec workers.",
            "",
            HEADER,
            *(_row(r, with_error=False) for r in results),
            "",
            "Before the codec workers, linear checks and cost-counting limits (issue 9), the same kinds of request "
            "held the event loop for their whole decode: 40,000 output names 11 s, a 6,000 x 6,000 classify context "
            "40 s and more, a 54 MB body with one NaN 69 s, and 16 MB of strings grew the process by 2.4 GB. "
            "`--repeat N` sends the cases N times to one server (memory over time), `--only TEXT` picks cases.",
            "",
        ]
    )
    write_section(SECTION, section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", action="store_true", help=f"write the table into {DOCS.name}")
    parser.add_argument("--env", action="append", default=[], help="a server setting, e.g. RTSERVE_CODEC_WORKERS=2")
    parser.add_argument("--only", default="", help="run the cases whose name holds this text")
    parser.add_argument("--repeat", type=int, default=1, help="run the cases this many times (memory over time)")
    options = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in options.env)
    print(HEADER, flush=True)
    results = run(overrides, options.only, options.repeat)
    if options.docs:
        write_docs(results, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
