"""A real server's cold start (issue 13): the split it exports at its first ready and the line it logs then.

No timing is asserted: which phases are there, that they are plausible (non-negative, TensorFlow's import
inside the time to ready, the load phases inside the models phase), and that they add up."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from apptools import publish, running_server
from bench.coldstart import parse_phases
from service.observability.metrics import LOAD_PHASES
from service.repository.local import LocalRepository

STARTUP_PHASES = ("python_start", "tensorflow_import", "imports", "setup", "models")


def test_a_served_model_exports_and_logs_its_cold_start_split(tmp_path: Path, demo_model_dir: Path) -> None:
    publish(LocalRepository(tmp_path / "models"), "iris", 1, demo_model_dir)
    env = {"RTSERVE_REPOSITORY": str(tmp_path / "models"), "RTSERVE_CACHE_DIR": str(tmp_path / "cache")}
    with running_server({**env, "RTSERVE_LOG_FORMAT": "json"}, tmp_path) as server:
        exposition = httpx.get(server.url + "/metrics", timeout=10).text
        log = server.log()
    samples = {
        (sample.name, sample.labels.get("phase", "")): sample
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    startup = {phase: samples[("rtserve_startup_phase_seconds", phase)].value for phase in STARTUP_PHASES}
    total = samples[("rtserve_startup_seconds", "")].value
    assert all(seconds >= 0.0 for seconds in startup.values()), startup
    assert abs(sum(startup.values()) - total) < 1e-6  # the phases are the whole time to ready
    assert 0.0 < startup["tensorflow_import"] < total
    loads = {phase: samples[("rtserve_model_load_phase_seconds", phase)] for phase in LOAD_PHASES}
    assert {sample.labels["model_name"] for sample in loads.values()} == {"iris"}
    assert all(sample.value >= 0.0 for sample in loads.values())
    assert 0.0 < sum(sample.value for sample in loads.values()) <= startup["models"]
    assert loads["load"].value > 0.0

    # The bench reads the same split.
    assert parse_phases(exposition, "iris") == {
        **startup,
        "total": total,
        **{f"load.{phase}": sample.value for phase, sample in loads.items()},
    }

    [line] = [json.loads(text) for text in log.splitlines() if "after the process started" in text]
    assert line["level"] == "info"
    assert line["message"].startswith(f"ready {total:.2f}s after the process started: python_start ")
    for phase in (*STARTUP_PHASES, *LOAD_PHASES):
        assert f" {phase} " in line["message"], line["message"]
    assert "(iris 1: download " in line["message"]
