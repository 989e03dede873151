"""The bench's compute-bound case against the real rtserve process (issue 13, point 3): rtserve serves the CNN
the bench builds over both of its lanes (V2 binary REST, V2 gRPC raw), the answers pass the bench's own check
against bench.inprocess's reference, and its requests may share model calls (the batch-safety check at load
finds the CNN row-independent: batching is what the case measures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from apptools import publish, running_server
from bench import cnnbench, cnnmodel, run, servers
from service.repository.local import LocalRepository


def _reference(model_dir: Path) -> dict[str, object]:
    """bench.inprocess --case cnn's reference answers (a short, bounded rate measurement comes with them)."""
    command = [
        sys.executable,
        "-m",
        "bench.inprocess",
        str(model_dir),
        "--case",
        "cnn",
        "--batches",
        "1",
        "--runners",
        "session",
    ]
    command += ["--seconds", "0.1", "--reference-rows", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True, env=dict(os.environ))
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_rtserve_serves_the_cnn_over_both_lanes_and_passes_the_bench_check(tmp_path: Path) -> None:
    model_dir = cnnmodel.write(tmp_path / "saved" / "cnn")
    inprocess = _reference(model_dir)
    assert [rate["rows"] for rate in inprocess["rates"]] == [1]  # type: ignore[attr-defined]
    publish(LocalRepository(tmp_path / "models"), cnnbench.MODEL, 1, model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(tmp_path / "models"),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_BATCHING__MAX_BATCH_SIZE": "16",  # fewer warm-up sizes: a bounded start
    }
    with running_server(env, tmp_path, ready_timeout_s=180.0) as server:
        rtserve = next(spec for spec in servers.SERVERS if spec.name == "rtserve")
        running = servers.Running(rtserve, server.process, server.port, server.log_path, server.grpc_port)
        bodies = cnnbench.bodies()
        for lane in cnnbench.LANES["rtserve"]:
            status, why, sizes = run.check_lane(running, lane, bodies, inprocess["references"], run.CNN)
            assert (status, why) == ("ok", ""), lane.name
            assert sizes == ({1: sizes[1]} if lane.kind == "grpc" else {})
        wrong = {"1": [[0.1] * 10]}  # the same check refuses an answer that is not the model's
        status, why, _ = run.check_lane(running, cnnbench.BINARY, bodies, wrong, run.CNN)
        assert status == "wrong answer" and why.startswith("1 rows: got"), why
        _, body, _ = servers.request(server.port, "/metrics", b"", {}, method="GET")
        merged = [
            line
            for line in body.decode().splitlines()
            if line.startswith("rtserve_batching_merged{") and 'model_name="cnn"' in line
        ]
        assert merged and all('basis="safe"' in line and line.endswith(" 1.0") for line in merged), merged
