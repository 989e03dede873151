"""The bench's real PyTriton peer (bench/peers/pytriton_model.py) started as bench.run starts it: its V2 binary
REST and V2 gRPC answers pass the bench's own verification, and its whole process tree (the script, Triton's C++
server, the Python backend stub) is pinned to the server CPU.

It needs ``bench/.venvs/pytriton``, which only the bench creates (``python -m bench.envs pytriton``): without it
the test SKIPS with that reason, in CI too. ``.ci/run`` does not build that venv (some minutes and a TensorFlow
install for one peer); the unit tests in tests/unit/test_bench_issue13.py cover the command line and environment
without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bench import payloads, run, servers
from bench.grpc_payloads import build as build_grpc


def _session_cpus(session: int) -> dict[int, str]:
    """Cpus_allowed_list of every live process in a session, by pid."""
    found = {}
    for pid in servers.session_pids(session):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
            found[pid] = next(
                line.split(":", 1)[1].strip() for line in status.splitlines() if "Cpus_allowed_list" in line
            )
    return found


def test_the_pytriton_peer_answers_v2_binary_and_grpc_right_on_one_cpu(tmp_path: Path, demo_model_dir: Path) -> None:
    if not servers.envs.python_of("pytriton").exists():
        reason = "bench/.venvs/pytriton is absent (python -m bench.envs pytriton creates it; .ci/run does not)"
        print(reason)
        pytest.skip(reason)
    repository = tmp_path / "models"
    shutil.copytree(demo_model_dir, repository / servers.MODEL / "1")
    signature = tf.saved_model.load(str(demo_model_dir)).signatures["serving_default"]
    references = {
        str(count): signature(features=tf.constant(payloads.rows(count)))["probabilities"].numpy().tolist()
        for count in run.ROW_COUNTS
    }
    bodies = {(p, n): payloads.build(p, n) for p in payloads.PROTOCOLS for n in run.ROW_COUNTS}
    bodies.update({("v2-grpc", n): build_grpc("v2-grpc", n, servers.MODEL) for n in run.ROW_COUNTS})
    spec = next(spec for spec in servers.SERVERS if spec.name == "pytriton")
    cpu = str(min(os.sched_getaffinity(0)))
    probe = bodies[("v2-binary", 1)]
    running = servers.start(spec, repository, tmp_path, cpu, (servers.V2_PATH, probe.body, probe.headers))
    try:
        for lane in spec.lanes:
            status, why, _ = run.check_lane(running, lane, bodies, references)
            assert (lane.name, status, why) == (lane.name, "ok", "")
        pinned = _session_cpus(running.pid)
        assert len(pinned) >= 3, pinned  # the script, tritonserver, the Python backend stub (at least)
        assert set(pinned.values()) == {cpu}, pinned
        status, body, headers = servers.request(running.port, servers.V2_PATH, probe.body, probe.headers)
        expected = np.asarray(references["1"], dtype=np.float32)
        np.testing.assert_allclose(payloads.decode("v2-binary", body, headers), expected, atol=1e-6)
    finally:
        running.stop()
    assert not _session_cpus(running.pid)  # stopping reached every process it started
