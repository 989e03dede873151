"""The cold-start split (service/observability/startup.py): phases as they end, exported and logged at the first
ready, and the process's age from /proc."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.observability.metrics import Metrics
from service.observability.startup import Startup, process_age_s


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_the_phases_add_up_to_the_time_to_ready_and_are_exported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = Clock(), Metrics(CollectorRegistry())
    startup = Startup(0.5, clock)  # made half a second after the exec
    for phase, seconds in (("tensorflow_import", 3.0), ("imports", 0.25), ("setup", 0.125)):
        clock.now += seconds
        startup.mark(phase)
    clock.now += 1.0
    with caplog.at_level(logging.INFO, logger="service.observability.startup"):
        startup.ready(metrics, [("iris", "1", {"download": 0.0, "load": 0.75})])
    expected = {"python_start": 0.5, "tensorflow_import": 3.0, "imports": 0.25, "setup": 0.125, "models": 1.0}
    assert startup.phases == expected
    assert startup.total_s == sum(expected.values()) == 4.875
    sample = metrics.registry.get_sample_value
    assert {phase: sample("rtserve_startup_phase_seconds", {"phase": phase}) for phase in expected} == expected
    assert sample("rtserve_startup_seconds") == 4.875
    [line] = [record.getMessage() for record in caplog.records]
    assert line == (
        "ready 4.88s after the process started: python_start 0.50s, tensorflow_import 3.00s, imports 0.25s, "
        "setup 0.12s, models 1.00s (iris 1: download 0.00s, load 0.75s)"
    )


def test_without_the_process_age_the_split_starts_where_it_was_made() -> None:
    clock = Clock()
    startup = Startup(None, clock)
    clock.now += 2.0
    startup.ready(Metrics(CollectorRegistry()), [])
    assert startup.phases == {"models": 2.0}
    assert startup.total_s == 2.0


def test_the_process_age_comes_from_its_start_time_in_proc(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    started = int((time.clock_gettime(time.CLOCK_BOOTTIME) - 30.0) * ticks)
    stat = tmp_path / "stat"
    # A command name with spaces and a bracket, as /proc writes it: the fields are counted after the last ')'.
    fields = ["S", *["0"] * 18, str(started), "0"]
    stat.write_text(f"123 (odd ) name) {' '.join(fields)}\n", encoding="ascii")
    age = process_age_s(stat)
    assert age is not None and 29.0 < age < 40.0
    own = process_age_s()
    assert own is not None and own > 0.0  # this test's own process
    stat.write_text("garbage", encoding="ascii")
    assert process_age_s(stat) is None
    assert process_age_s(tmp_path / "missing") is None


def test_serving_a_folder_never_imports_boto3(tmp_path: Path) -> None:
    # boto3 is a tenth of a second or more of a cold start: only an s3:// repository needs it.
    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "from service.repository.factory import open_repository\n"
        "from service.settings import S3Settings\n"
        f"open_repository({str(tmp_path)!r}, S3Settings())\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]", done.stdout
