"""bench/coldstart.py: the split read from a server's /metrics, and the report's cold-start row and section,
from small hand-made (fake) results: no process is started here (tests/integration/test_coldstart.py runs one)."""

from __future__ import annotations

from typing import Any

from bench import coldstart, report

EXPOSITION = """\
# HELP rtserve_startup_seconds Seconds from the process's exec to its first ready.
# TYPE rtserve_startup_seconds gauge
rtserve_startup_seconds 4.5
# TYPE rtserve_startup_phase_seconds gauge
rtserve_startup_phase_seconds{phase="tensorflow_import"} 3.0
rtserve_startup_phase_seconds{phase="models"} 1.0
# TYPE rtserve_model_load_phase_seconds gauge
rtserve_model_load_phase_seconds{model_name="iris",model_version="1",phase="load"} 0.5
rtserve_model_load_phase_seconds{model_name="iris",model_version="1",phase="warm_up"} 0.25
rtserve_model_load_phase_seconds{model_name="other",model_version="1",phase="load"} 9.0
"""


def test_the_split_is_read_from_the_servers_metrics_for_the_model_asked() -> None:
    assert coldstart.parse_phases(EXPOSITION, "iris") == {
        "total": 4.5,
        "tensorflow_import": 3.0,
        "models": 1.0,
        "load.load": 0.5,
        "load.warm_up": 0.25,
    }
    assert coldstart.parse_phases("", "iris") == {}  # a server without these metrics (an older rtserve)


def fake_case(source: str, median_s: float, phases: dict[str, float]) -> dict[str, Any]:
    cpu_s = median_s * 0.75  # made up too: a little of each run's wall time went to other processes
    return {"model": "iris", "source": source, "median_s": median_s, "median_cpu_s": cpu_s, "phases": phases}


def fake_results(rtserve_s: float) -> dict[str, Any]:
    """A made-up cold-start result: TensorFlow alone in 4 s, rtserve in ``rtserve_s``."""
    phases = {"python_start": 0.25, "tensorflow_import": 3.0, "models": 1.0, "load.load": 0.5, "load.warm_up": 0.25}
    cases = [
        fake_case("tensorflow", 4.0, {"tensorflow_import": 3.5, "load": 0.5}),
        fake_case("local", rtserve_s, phases),
    ]
    return {"coldstart": {"runs": 5, "cpus": "0", "poll_s": 0.01, "titles": {"iris": "demo model"}, "cases": cases}}


def test_the_target_row_compares_the_demo_models_cold_start_with_tensorflows_import_and_load() -> None:
    [met] = report.coldstart_targets(fake_results(5.0))
    assert met["ratio"] == "1.25x" and met["ok"] is True
    assert met["measured"] == "5.00 s vs 4.00 s"
    [missed] = report.coldstart_targets(fake_results(7.0))
    assert missed["ratio"] == "1.75x" and missed["ok"] is False
    [absent] = report.coldstart_targets({})
    assert absent["ok"] is None and absent["measured"] == "not measured in this run"


def test_the_section_has_a_row_per_case_with_its_phases() -> None:
    lines = report.coldstart_section(fake_results(5.0))
    tensorflow = next(line for line in lines if "TensorFlow alone" in line)
    rtserve = next(line for line in lines if "rtserve, folder" in line)
    assert "| 4.00 | 1.00x |" in tensorflow and "| 3.50 |" in tensorflow and "| 0.50 |" in tensorflow
    assert "| 5.00 | 1.25x | 3.75 (1.25x) |" in rtserve
    assert rtserve.rstrip(" |").endswith("0.25")  # other: models 1.0 minus the load phases 0.75
    assert report.coldstart_section({}) == ["Not measured in this run."]
