"""h2load (nghttp2's C HTTP/2 load generator) replaying one framed unary gRPC request: the gRPC lanes' loads.

* closed loop: ``-c C -m M -D s``: C connections with M concurrent streams each (c = C x M in the tables; see
  ``split``), each stream sending its next call when the previous answer has arrived;
* open loop: ``--rps R -n N`` over a few connections with many streams each: each connection sends R calls per
  second whatever the server does, so the stream budget (``OPEN_CLIENTS x OPEN_STREAMS``) is never what holds a
  call back; h2load measures each call from its send (not from its intended time, as bench/loadgen/openloop.c
  does), so the run records the peak of calls in flight: below the budget, no call waited for a free stream and
  the send is the intended time, up to h2load's timer.

h2load counts an HTTP 200 as a success whatever the ``grpc-status`` in the trailers says, and keeps no trailers.
A gRPC error answer carries no message (trailers only), a good one exactly one of the good answer's size: so the
good answers of a run are its received DATA bytes over one good answer's framed size (``answer_bytes``, measured
once with a real client before the run), capped at the 200s. Latencies come from h2load's per-request log
(``--log-file``).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.loads import measured
from bench.servers import Running

STREAMS_PER_CLIENT = 8
OPEN_CLIENTS, OPEN_STREAMS = 4, 256
TIMEOUT_S = 20  # a connection idle that long is given up (wrk's --timeout)

_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_DATA = re.compile(r"traffic: .*\((\d+)\) total, .*\((\d+)\) headers .*, .*\((\d+)\) data")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Replay:
    """What h2load replays and against which server: a method on 127.0.0.1:port, the framed body's file, the
    headers, the CPUs h2load is pinned to, and one good answer's framed size (see the module's doc)."""

    server: Running
    port: int
    method: str
    body_file: Path
    headers: dict[str, str]
    cpus: str
    answer_bytes: int


def split(concurrency: int) -> tuple[int, int]:
    """(connections, streams each) for c concurrent calls: up to 8 streams on a connection, as one gRPC channel
    multiplexes its calls; c=1 -> 1 x 1, 8 -> 1 x 8, 32 -> 4 x 8, 128 -> 16 x 8."""
    clients = max(1, math.ceil(concurrency / STREAMS_PER_CLIENT))
    return clients, max(1, concurrency // clients)


def parse(stdout: str) -> dict[str, Any]:
    """h2load's summary: duration, request counts, status classes and received bytes."""
    finished, requests = _FINISHED.search(stdout), _REQUESTS.search(stdout)
    status, traffic = _STATUS.search(stdout), _DATA.search(stdout)
    if not (finished and requests and status and traffic):
        raise RuntimeError(f"unreadable h2load output: {stdout[-2000:]}")
    total, started, done, succeeded, failed, errored, timeout = (int(value) for value in requests.groups())
    return {
        "duration_s": float(finished.group(1)) * _UNIT_S[finished.group(2)],
        "total": total,
        "started": started,
        "done": done,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "status_2xx": int(status.group(1)),
        "status_other": sum(int(value) for value in status.groups()[1:]),
        "bytes_total": int(traffic.group(1)),
        "bytes_headers": int(traffic.group(2)),
        "bytes_data": int(traffic.group(3)),
    }


def good_answers(summary: dict[str, Any], answer_bytes: int) -> int:
    """Calls answered with a whole good message (see the module's doc)."""
    answered: int = summary["status_2xx"]
    return min(answered, round(summary["bytes_data"] / answer_bytes)) if answer_bytes > 0 else 0


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(start times in s, latencies in ms) of the answered (HTTP 200) requests of an h2load ``--log-file``."""
    starts, latencies = [], []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "200":
            starts.append(int(fields[0]) / 1e6)
            latencies.append(int(fields[2]) / 1e3)
    return np.asarray(starts, dtype=np.float64), np.asarray(latencies, dtype=np.float64)


def latency_summary(latencies_ms: np.ndarray) -> dict[str, float]:
    if latencies_ms.size == 0:
        return dict.fromkeys(("p50", "p90", "p99", "p999", "max", "mean"), 0.0)
    p50, p90, p99, p999 = np.percentile(latencies_ms, [50, 90, 99, 99.9])
    maximum, mean = latencies_ms.max(), latencies_ms.mean()
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p999": float(p999),
        "max": float(maximum),
        "mean": float(mean),
    }


def peak_in_flight(starts_s: np.ndarray, latencies_ms: np.ndarray) -> int:
    """The most calls in flight at once (a sweep over the calls' start and end times)."""
    if starts_s.size == 0:
        return 0
    begin = np.stack([starts_s, np.ones_like(starts_s)], 1)
    end = np.stack([starts_s + latencies_ms / 1e3, -np.ones_like(starts_s)], 1)
    events = np.concatenate([begin, end])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # an end before a start at the same instant
    return int(np.max(np.cumsum(events[:, 1])))


def _command(replay: Replay, log: Path, mode: list[str]) -> list[str]:
    command = ["taskset", "-c", replay.cpus, "h2load", "-t1", *mode, "-d", str(replay.body_file)]
    command += ["--log-file", str(log), "-N", f"{TIMEOUT_S}s"]
    for name, value in replay.headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, f"http://127.0.0.1:{replay.port}{replay.method}"]


def _h2load(
    replay: Replay, mode: list[str], timeout_s: float
) -> tuple[dict[str, Any], dict[str, float], np.ndarray, np.ndarray]:
    """h2load with ``mode`` (its load options): its summary, the CPU use, and the log's starts and latencies."""
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as folder:
        log = Path(folder) / "requests.tsv"
        stdout, usage = measured(replay.server, _command(replay, log, mode), None, timeout_s)
        starts, latencies = read_log(log)
    return parse(stdout), usage, starts, latencies


def closed_loop(replay: Replay, concurrency: int, seconds: float, calls: int = 0) -> dict[str, Any]:
    """One closed-loop run of ``seconds`` (or of ``calls`` calls, when given), in the shape of
    bench.loads.closed_loop's (plus the gRPC counts)."""
    clients, streams = split(concurrency)
    mode = ["-c", str(clients), "-m", str(streams), *(["-n", str(calls)] if calls else ["-D", f"{seconds:g}"])]
    summary, usage, _, latencies = _h2load(replay, mode, seconds + 90)
    ok = good_answers(summary, replay.answer_bytes)
    not_good = summary["done"] - ok
    errors = {
        "grpc_or_short": max(0, summary["status_2xx"] - ok),
        "status": summary["status_other"],
        "stream": summary["failed"] - summary["status_other"] + summary["errored"],
        "timeout": summary["timeout"],
    }
    return {
        "connections": concurrency,
        "clients": clients,
        "streams_per_client": streams,
        "duration_s": summary["duration_s"],
        "requests": summary["done"],
        "ok": ok,
        "ok_share": ok / summary["done"] if summary["done"] else 0.0,
        "rps": ok / summary["duration_s"],
        "errors": errors,
        "error_count": max(not_good, sum(errors.values())),
        "latency_ms": latency_summary(latencies),
        "h2load": summary,
        **usage,
    }


def open_loop(replay: Replay, rate: float, seconds: float) -> dict[str, Any]:
    """One open-loop run, in the shape of bench.loads.open_loop's (no send delay: h2load does not measure it)."""
    clients = max(1, min(OPEN_CLIENTS, int(rate)))
    scheduled = max(clients, round(rate * seconds))
    mode = ["-c", str(clients), "-m", str(OPEN_STREAMS), "-n", str(scheduled), "--rps", f"{rate / clients:.3f}"]
    summary, usage, starts, latencies = _h2load(replay, mode, seconds + 2 * TIMEOUT_S + 60)
    ok = good_answers(summary, replay.answer_bytes)
    span = float(starts.max() - starts.min()) if starts.size > 1 else summary["duration_s"]
    return {
        "rate": rate,
        "seconds": seconds,
        "scheduled": summary["total"],
        "ok": ok,
        "non2xx": summary["status_other"] + max(0, summary["status_2xx"] - ok),
        "errors": summary["failed"] - summary["status_other"] + summary["errored"] + summary["timeout"],
        "unfinished": summary["total"] - summary["done"],
        "achieved_rps": summary["done"] / span if span > 0 else 0.0,
        "max_connections": clients,
        "stream_budget": clients * OPEN_STREAMS,
        "peak_in_flight": peak_in_flight(starts, latencies),
        "latency_ms": latency_summary(latencies),
        "dispatch_delay_ms": None,
        "h2load": summary,
        **usage,
    }
