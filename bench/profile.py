"""A py-spy profile of the rtserve process under load, summarised per thread and per function.

py-spy (from the ``tools`` venv) samples the server without stopping it (``--nonblocking``) while wrk drives the
1-row TF Serving lane at concurrency 32. Its raw output (one collapsed stack and a count a line, each stack
starting with its thread) is kept in the results folder; the summary gives each thread's share of the samples,
the functions where the samples were (self) and the functions they were under (inclusive).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import envs
from bench.loads import LOADGEN_DIR
from bench.servers import Running

SAMPLE_RATE_HZ = 200
TOP = 25
_THREAD = re.compile(r"^thread \((?:0x)?[0-9A-Fa-f]+\):? ?(?P<name>.*)$")
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``Batcher._serve (service/batching.py:231)`` -> ``Batcher._serve (service/batching.py)``: lines merged."""
    match = _FRAME.match(frame)
    return f"{match['function']} ({match['file']})" if match else frame


# Self time grouped by where the sampled frame's file lives (first match wins).
AREAS = (
    ("TensorFlow (signature call, tensor conversion)", ("tensorflow/",)),
    ("prometheus_client (metrics)", ("prometheus_client/",)),
    ("uvicorn + httptools (HTTP parsing, ASGI glue)", ("uvicorn/",)),
    ("starlette / fastapi", ("starlette/", "fastapi/")),
    ("event loop (uvloop's C code shows as asyncio Runner.run), asyncio", ("asyncio/",)),
    ("threading (waits and hand-offs between the loop and the inference thread)", ("threading.py",)),
    ("rtserve's own code (service/)", ("service/",)),
)


def _area(frame: str) -> str:
    for name, markers in AREAS:
        if any(marker in frame for marker in markers):
            return name
    return "other (stdlib, numpy, orjson callers...)"


def summarise(raw: str) -> dict[str, Any]:
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread_match = _THREAD.match(frames[0])
        thread = (thread_match["name"] or "main") if thread_match else "?"
        calls = [_frame_name(frame) for frame in (frames[1:] if thread_match else frames)]
        total += count
        threads[thread] += count
        if calls:
            self_time[calls[-1]] += count
            areas[_area(calls[-1])] += count
        for name in set(calls):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": name, "samples": n, "pct": 100 * n / max(total, 1)} for name, n in counter.most_common(TOP)]

    return {
        "samples": total,
        "threads": share(threads),
        "areas": share(areas),
        "self": share(self_time),
        "inclusive": share(inclusive),
    }


def profile(
    server: Running, path: str, body_file: Path, headers: dict[str, str], seconds: float, cpus: str, outdir: Path
) -> dict[str, Any]:
    py_spy = envs.python_of("tools").parent / "py-spy"
    raw_path = outdir / "rtserve-profile.txt"
    wrk_env = {
        "BENCH_BODY": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items()),
        "PATH": "/usr/bin:/bin",
    }
    wrk = ["taskset", "-c", cpus, "wrk", "-t1", "-c32", f"-d{seconds + 3:g}s", "-s", str(LOADGEN_DIR / "post.lua")]
    load = subprocess.Popen(
        [*wrk, f"http://127.0.0.1:{server.port}{path}"],
        env=wrk_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    record_options = f"-d {seconds:g} -r {SAMPLE_RATE_HZ} --nonblocking --threads --format raw".split()
    try:
        time.sleep(1.0)
        record = subprocess.run(
            ["taskset", "-c", cpus, str(py_spy), "record", "-p", str(server.pid), *record_options, "-o", str(raw_path)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        dump = subprocess.run(
            [str(py_spy), "dump", "-p", str(server.pid)], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        load.wait(seconds + 60)
    (outdir / "rtserve-dump.txt").write_text(dump.stdout + dump.stderr, encoding="utf-8")
    if record.returncode != 0 or not raw_path.exists():
        return {"error": (record.stderr or record.stdout)[-2000:]}
    summary = summarise(raw_path.read_text(encoding="utf-8"))
    summary["raw_file"] = raw_path.name
    summary["py_spy_says"] = (record.stderr + record.stdout).strip().splitlines()[-2:]
    return summary
