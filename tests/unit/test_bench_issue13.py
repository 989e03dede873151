"""Issue 13's bench parts that need no peer venv: the report's targets and before/after table (from small FAKE
results dicts, made up here: no server ran), the "rtserve before" tree (a real ``git archive`` of HEAD), and how
the PyTriton peer and rtserve-before are started (command line, environment, CPU pinning, CPU accounting)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from bench import before, report, servers

SPECS = {spec.name: spec for spec in servers.SERVERS}


# ---------------------------------------------------------------- fake results


def _run(c: int, rps: float, p50: float = 1.0) -> dict[str, Any]:
    return {"connections": c, "rps": rps, "latency_ms": {"p50": p50, "p90": p50, "p99": 2 * p50}}


def _lane(server: str, lane: str, runs: list[dict[str, Any]] | None = None, status: str = "ok") -> dict[str, Any]:
    entry: dict[str, Any] = {"server": server, "title": server, "lane": lane, "status": status, "why": "refused"}
    if status == "ok":
        entry["payloads"] = {str(n): {"closed": runs or [], "open": [], "max_rate": 0.0} for n in (1, 64)}
    return entry


def _fake_results(lanes: list[dict[str, Any]], calls_per_s: float = 5000.0) -> dict[str, Any]:
    return {
        "lanes": lanes,
        "inprocess": {"rates": [{"rows": 1, "calls_per_s": calls_per_s, "rows_per_s": calls_per_s}]},
        "rtserve": {"before": {"ref": "af9d972", "commit": "af9d972"}},
    }


def test_the_low_load_target_shows_its_three_numbers_and_the_bound() -> None:
    # Fake: floor p50 0.12 ms, in-process 5000 calls/s (0.2 ms): bound 1.5 x 0.32 = 0.48 ms.
    floor = _lane("floor-asgi", "tfserving", [_run(1, 8000.0, p50=0.12)])
    slow = report.low_load_target(_fake_results([_lane("rtserve", "tfserving", [_run(1, 1700, p50=0.6)]), floor]))
    assert slow["ok"] is False
    assert slow["measured"] == "p50 0.600 ms; floor p50 0.120 ms + in-process call 0.200 ms: bound 0.480 ms"
    assert slow["ratio"] == "1.25x the bound"
    fast = report.low_load_target(_fake_results([_lane("rtserve", "tfserving", [_run(1, 2500, p50=0.4)]), floor]))
    assert (fast["ok"], fast["ratio"]) == (True, "0.83x the bound")


def test_the_low_load_target_says_what_it_lacks() -> None:
    row = report.low_load_target(_fake_results([_lane("rtserve", "tfserving", [_run(1, 2000)])], calls_per_s=0))
    assert row["ok"] is None
    assert row["measured"] == "not measured: floor-asgi tfserving (not in this run); no in-process rate at batch 1"


def test_issue13_targets_compare_lane_by_lane_against_before_kserve_and_pytriton() -> None:
    c32 = report.TARGET_CONCURRENCY
    lanes = [
        _lane("rtserve", "tfserving", [_run(c32, 3000.0)]),
        _lane("rtserve", "v2-binary", [_run(c32, 2700.0)]),
        _lane("rtserve", "v2-grpc", [_run(c32, 3300.0)]),
        _lane("rtserve-before", "tfserving", [_run(c32, 2000.0)]),
        _lane("rtserve-before", "v2-binary", [_run(c32, 2000.0)]),
        _lane("rtserve-before", "v2-grpc", status="did not start"),
        _lane("kserve", "tfserving", [_run(c32, 300.0)]),
        _lane("kserve", "v2-binary", [_run(c32, 300.0)]),
        _lane("pytriton", "v2-binary", [_run(c32, 900.0)]),
        _lane("pytriton", "v2-grpc", [_run(c32, 1000.0)]),
    ]
    rows = report.issue13_targets(_fake_results(lanes))
    by_name = {row["target"]: row for row in rows}
    assert [(row["ratio"], row["ok"]) for row in rows[1:]] == [
        ("1.50x", True),  # tfserving: 3000 / 2000
        ("1.35x", False),  # v2-binary: 2700 / 2000
        ("", None),  # v2-grpc: before did not start
        ("9.00x", False),  # V2 binary vs KServe
        ("3.00x", True),  # V2 binary vs PyTriton
        ("3.30x", True),  # V2 gRPC vs PyTriton
    ]
    assert by_name["1 row, c=32: >= 1.5x rtserve before (v2-grpc)"]["measured"] == (
        "not measured: rtserve-before v2-grpc (did not start: refused)"
    )
    assert by_name["1 row, c=32: >= 3x PyTriton (V2 gRPC)"]["measured"] == "3,300 vs 1,000 req/s"
    # TF Serving REST vs KServe V1 is issue 4's row, computed once for the report: 3000 / 300.
    kserve_v1 = report.targets(_fake_results(lanes))[0]
    assert kserve_v1["target"] == "1 row, c=32: >= 10x KServe (TF Serving REST vs KServe V1, same body)"
    assert (kserve_v1["ratio"], kserve_v1["ok"]) == ("10.0x", True)
    assert not any("TF Serving REST vs KServe V1" in row["target"] for row in rows)


def test_the_before_after_table_has_c1_p50_and_c32_rate_per_lane_with_speed_ups() -> None:
    c32 = report.TARGET_CONCURRENCY
    lanes = [
        _lane("rtserve", "tfserving", [_run(1, 2000, p50=0.4), _run(c32, 3000.0)]),
        _lane("rtserve", "v2-json", [_run(1, 1500, p50=0.5)]),  # no "before" lane: not in the table
        _lane("rtserve-before", "tfserving", [_run(1, 1600, p50=0.6), _run(c32, 2000.0)]),
    ]
    results = _fake_results(lanes)
    assert report.before_after_rows(results) == [
        ["tfserving", "0.600 ms", "0.400 ms", "1.50x", "2,000", "3,000", "1.50x"]
    ]
    section = "\n".join(report.issue13_section(results))
    assert "### Issue 13 targets" in section
    assert "rtserve before (`af9d972`) and now" in section
    assert "| tfserving | 0.600 ms | 0.400 ms | 1.50x | 2,000 | 3,000 | 1.50x |" in section


# ---------------------------------------------------------------- rtserve before


def test_a_git_archive_of_head_gives_a_tree_that_python_imports_service_from(tmp_path: Path) -> None:
    tree = before.extract("HEAD", servers.REPO_ROOT, tmp_path)
    sha = before.resolve("HEAD", servers.REPO_ROOT)
    assert tree == tmp_path / f"rtserve-{sha}"
    assert (tree / "service" / "__init__.py").is_file()
    assert (tree / "service" / "cli.py").read_bytes() == subprocess.run(
        ["git", "-C", str(servers.REPO_ROOT), "show", f"{sha}:service/cli.py"], capture_output=True, check=True
    ).stdout
    assert before.extract("HEAD", servers.REPO_ROOT, tmp_path) == tree  # written once, then reused
    # What rtserve-before relies on: PYTHONPATH wins over the editable install of the shared .venv.
    imported = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(imported) == tree / "service" / "__init__.py"


def test_an_unknown_ref_is_refused_with_git_s_word(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-ref"):
        before.extract("no-such-ref", servers.REPO_ROOT, tmp_path)
    assert not list(tmp_path.iterdir())


def test_rtserve_before_runs_the_same_command_on_its_own_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS["rtserve-before"]
    assert spec.lanes == SPECS["rtserve"].lanes
    assert spec.title == f"rtserve before ({servers.BEFORE_REF})"
    with pytest.raises(ValueError, match="no source tree"):
        servers.spec_environment(spec, 4321)
    monkeypatch.setitem(servers.RTSERVE_TREES, "rtserve-before", tmp_path / "rtserve-abc1234")
    env = servers.spec_environment(spec, 4321)
    assert (env["PYTHONPATH"], env["RTSERVE_GRPC_PORT"]) == (str(tmp_path / "rtserve-abc1234"), "4321")
    assert servers.spec_environment(SPECS["rtserve"], 4321)["PYTHONPATH"] == str(servers.REPO_ROOT)
    command = servers._command(spec, 8123, [4321], tmp_path / "models", tmp_path, ())
    assert command[:2] == [str(servers.RTSERVE), "serve"]
    assert command[command.index("--cache-dir") + 1] == str(tmp_path / "rtserve-before-cache")


# ---------------------------------------------------------------- PyTriton


def test_pytriton_runs_its_script_with_the_ports_model_and_batching(tmp_path: Path) -> None:
    spec = SPECS["pytriton"]
    assert [lane.name for lane in spec.lanes] == ["v2-json", "v2-binary", "v2-grpc"]
    assert (spec.venv, spec.extra_ports) == ("pytriton", 2)
    for folder in ("iris/1", "cnn/1", "cnn/2", "cnn/notes", "empty"):
        (tmp_path / "models" / folder).mkdir(parents=True)
    command = servers._command(spec, 8123, [8124, 8125], tmp_path / "models", tmp_path, ())
    assert command[:2] == [
        str(servers.envs.python_of("pytriton")),
        str(servers.envs.BENCH_DIR / "peers" / "pytriton_model.py"),
    ]

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert (option("--http-port"), option("--grpc-port"), option("--metrics-port")) == ("8123", "8124", "8125")
    # Every model of the repository, at its latest version, by name (the bench's demo model and any other).
    models = [item for item in command if item.startswith("--model=")]
    assert models == [
        f"--model=cnn={tmp_path / 'models' / 'cnn' / '2'}",
        f"--model=iris={tmp_path / 'models' / 'iris' / '1'}",
    ]
    assert (option("--max-batch-size"), option("--max-queue-delay-us")) == ("256", "0")
    assert option("--workspace") == str(tmp_path / "pytriton-workspace")
    assert "pytriton" in servers.envs.ENV_NAMES


def test_pytriton_s_environment_points_the_stub_at_libpython(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    env = servers.spec_environment(SPECS["pytriton"], 8124)
    libdir, rest = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert (libdir, rest) == (sysconfig.get_config_var("LIBDIR"), "/opt/other")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert list(Path(libdir).glob(f"libpython{version}*.so*")), f"no libpython{version} in {libdir}"
    assert env["RTSERVE_GRPC_PORT"] == "0"  # nothing of rtserve's leaks into a peer


def test_the_pinned_command_s_children_inherit_the_cpu() -> None:
    cpu = str(min(os.sched_getaffinity(0)))
    child = "import os, subprocess, sys; print(sorted(os.sched_getaffinity(0)))"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    command = servers.pinned(cpu, [sys.executable, "-c", parent])
    assert command[:3] == ["taskset", "-c", cpu]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == f"[{cpu}]"


def test_a_server_s_cpu_time_counts_the_children_in_its_session() -> None:
    # The leader sleeps; its child burns 0.3 s of CPU (by its own CPU clock, not the wall) and then waits.
    child = "import time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\ntime.sleep(60)"
    leader = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    process = subprocess.Popen(
        [sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "done"
        running = servers.Running(SPECS["pytriton"], process, 0, Path("unused.log"))  # type: ignore[arg-type]
        assert running.cpu_seconds() >= 0.3
    finally:
        os.killpg(process.pid, 9)
        process.wait(10)


def test_stopping_a_server_waits_for_the_children_in_its_session() -> None:
    # The leader dies at SIGTERM; its child takes 0.5 s to finish after it (as Triton's server does, longer).
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    )
    leader = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    process = subprocess.Popen(
        [sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    running = servers.Running(SPECS["pytriton"], process, 0, Path("unused.log"))  # type: ignore[arg-type]
    assert len(servers.session_pids(process.pid)) == 2
    running.stop()
    assert servers.session_pids(process.pid) == []
