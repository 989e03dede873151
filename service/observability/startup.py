"""Cold start: how long this process took from exec to its first ready, and where the time went.

The Kubernetes startup probe and the HPA both wait for this (docs/kubernetes.md "Cold start"). The split is kept
as ``rtserve_startup_phase_seconds{phase}`` and ``rtserve_startup_seconds``, set once at the first ready, and
logged in one line then, with every loaded version's own load phases (``rtserve_model_load_phase_seconds``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from service.observability.metrics import Metrics

log = logging.getLogger(__name__)

# In the order they happen; together with "models" (the manager's start to the first ready) they add up to the
# process's time to ready.
PYTHON_START = "python_start"  # exec to the serve command: the interpreter, the command line, the settings
TENSORFLOW_IMPORT = "tensorflow_import"
IMPORTS = "imports"  # the server's own modules and the rest of its libraries (web framework, gRPC, boto3)
SETUP = "setup"  # building the components and binding the sockets, up to the manager's start
MODELS = "models"  # the manager's start to the first ready: polls, downloads, loads, warm-ups


def process_age_s(stat: Path = Path("/proc/self/stat")) -> float | None:
    """Seconds since this process was exec'd (Linux: its start time in /proc, on the boot-time clock); None where
    that cannot be read, so that a platform without /proc reports the split without the interpreter's start."""
    try:
        # Field 22 (start time, in clock ticks since boot); the name in field 2 may hold spaces and brackets.
        fields = stat.read_text(encoding="ascii").rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Startup:
    """The phases of one process's start, marked as they end; ``ready`` closes them at the first ready."""

    def __init__(self, age_s: float | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = self._last = clock()
        self._age_s = age_s  # how old the process was when this was made
        self.phases: dict[str, float] = {} if age_s is None else {PYTHON_START: age_s}
        self.total_s: float | None = None  # exec (or this object's making) to the first ready

    @classmethod
    def now(cls) -> Startup:
        return cls(process_age_s())

    def mark(self, phase: str) -> None:
        """``phase`` ended now: it took the time since the previous mark."""
        now = self._clock()
        self.phases[phase] = now - self._last
        self._last = now

    def ready(self, metrics: Metrics, loads: Iterable[tuple[str, str, Mapping[str, float]]]) -> None:
        """The first ready: export the split and log it, with each (model, version, load phases) in ``loads``."""
        self.mark(MODELS)
        self.total_s = (self._age_s or 0.0) + self._last - self._began  # the sum of the phases
        for phase, seconds in self.phases.items():
            metrics.startup_phase.labels(phase).set(seconds)
        metrics.startup.set(self.total_s)
        split = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in self.phases.items())
        versions = "; ".join(
            f"{model} {version}: " + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in phases.items())
            for model, version, phases in loads
        )
        log.info("ready %.2fs after the process started: %s (%s)", self.total_s, split, versions or "no loads")
