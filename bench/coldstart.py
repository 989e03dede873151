"""Cold start: seconds from exec to ready, rtserve against TensorFlow's own import and load of the same SavedModel.

    python -m bench.coldstart [--runs 5] [--cpus 0] [--client-cpus 1] [--models demo,large] [--no-s3]

Every case runs in a fresh process pinned with ``taskset`` to the server CPUs, the cases interleaved run by run:

* ``tensorflow``: ``import tensorflow as tf; tf.saved_model.load(DIR)``, from exec to the line it prints after the
  load (the issue's baseline; its exit is not waited for);
* ``local``: ``rtserve serve`` on a folder repository holding the model, from exec to ``GET /v1/models/M``
  answering AVAILABLE (polled every 10 ms from the client CPU, bounded);
* ``s3``: the same from an S3 repository (moto's server on loopback), so that the download is real.

Each run also keeps the CPU time (user + system) the process had used by then: on a shared machine the wall time
also counts others' work, the CPU time much less so.

The split comes from the server's own metrics (rtserve_startup_phase_seconds, rtserve_model_load_phase_seconds),
read once it is ready. Prints one JSON document; bench/run.py keeps it in results.json (``coldstart``) and
bench/report.py renders it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import servers

POLL_S = 0.01
READY_TIMEOUT_S = 240.0
MOTO_TIMEOUT_S = 30.0
BUCKET = "coldstart"
STARTUP_PHASE = "rtserve_startup_phase_seconds"
LOAD_PHASE = "rtserve_model_load_phase_seconds"
BASELINE = """\
import json, os, sys, time
began = time.perf_counter()
import tensorflow as tf
imported = time.perf_counter()
tf.saved_model.load(sys.argv[1])
phases = {"tensorflow_import": imported - began, "load": time.perf_counter() - imported}
print(json.dumps({"phases": phases, "cpu_s": sum(os.times()[:2])}), flush=True)
os._exit(0)
"""


def parse_phases(exposition: str, model: str) -> dict[str, float]:
    """The server's cold-start split from its /metrics text: the process's phases, then the model's load phases
    (prefixed ``load.``), and ``total`` (rtserve_startup_seconds)."""
    phases: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == STARTUP_PHASE:
                phases[sample.labels["phase"]] = sample.value
            elif sample.name == LOAD_PHASE and sample.labels.get("model_name") == model:
                phases["load." + sample.labels["phase"]] = sample.value
            elif sample.name == "rtserve_startup_seconds":
                phases["total"] = sample.value
    return phases


def run_baseline(model_dir: Path, cpus: str) -> dict[str, Any]:
    env = servers.server_environment()
    began = time.monotonic()
    process = subprocess.Popen(
        ["taskset", "-c", cpus, sys.executable, "-c", BASELINE, str(model_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the load's end; the interpreter's teardown is not counted
        seconds = time.monotonic() - began
    finally:
        process.kill()
        process.wait(30)
    if not line:
        raise RuntimeError("the TensorFlow baseline printed nothing")
    return {"seconds": seconds, **json.loads(line)}


def run_server(repository: str, model: str, cpus: str, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    """One cold start of ``rtserve serve``: exec to AVAILABLE, with its own split from /metrics."""
    port, grpc_port = servers.free_port(), servers.free_port()
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
    command = [sys.executable, "-m", "service", "serve", "--repository", repository, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--cache-dir", str(cache)]
    env = {**env, "RTSERVE_GRPC_PORT": str(grpc_port)}  # otherwise its defaults: gRPC on, every model
    log_path = workdir / "coldstart-server.log"
    with log_path.open("ab") as log:
        began = time.monotonic()
        process = servers.spawn_pinned(cpus, command, log, workdir, env)
    running = servers.Running(servers.SERVERS[0], process, port, log_path)
    try:
        seconds = _wait_available(running, model, began)
        cpu_s = running.cpu_seconds()
        _, exposition, _ = servers.request(port, "/metrics", b"", {}, timeout=10.0, method="GET")
        return {"seconds": seconds, "cpu_s": cpu_s, "phases": parse_phases(exposition.decode(), model)}
    finally:
        running.stop()
        shutil.rmtree(cache, ignore_errors=True)


def _wait_available(running: servers.Running, model: str, began: float) -> float:
    while time.monotonic() - began < READY_TIMEOUT_S:
        if not running.alive():
            raise RuntimeError(f"rtserve exited while starting; see {running.log_path}")
        try:
            status, body, _ = servers.request(running.port, f"/v1/models/{model}", b"", {}, timeout=5.0, method="GET")
            if status == 200 and '"AVAILABLE"' in body.decode():
                return time.monotonic() - began
        except OSError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"rtserve was not ready within {READY_TIMEOUT_S:.0f} s; see {running.log_path}")


def push(model_dir: Path, model: str, repository: str, env: dict[str, str]) -> None:
    """``rtserve push``: with its MANIFEST.json a version is complete at the first poll, in either repository."""
    command = [sys.executable, "-m", "service", "push", str(model_dir), "--model", model, "--repository", repository]
    subprocess.run(command, check=True, timeout=600, capture_output=True, env=env)


class Moto:
    """Moto's S3 server on a loopback port, on the client CPUs, holding each model under s3://BUCKET/<model>/."""

    def __init__(self, workdir: Path, cpus: str) -> None:
        self.endpoint = f"http://127.0.0.1:{servers.free_port()}"
        port = self.endpoint.rsplit(":", 1)[1]
        self.env = {
            **servers.server_environment(),
            "AWS_ACCESS_KEY_ID": "coldstart",
            "AWS_SECRET_ACCESS_KEY": "coldstart",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "RTSERVE_S3__ENDPOINT_URL": self.endpoint,
        }
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port]
        with (workdir / "moto.log").open("ab") as log:
            self.process = servers.spawn_pinned(cpus, command, log, workdir, dict(os.environ))
        deadline = time.monotonic() + MOTO_TIMEOUT_S
        while True:
            try:
                if servers.request(int(port), f"/{BUCKET}", b"", {}, timeout=2.0, method="PUT")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"moto's server did not start; see {workdir / 'moto.log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        servers.stop_session(self.process)


def summarise(name: str, source: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a case's runs: its seconds and each phase's (over the runs that report it)."""
    names = sorted({phase for run in runs for phase in run["phases"]})
    phases = {p: statistics.median([r["phases"][p] for r in runs if p in r["phases"]]) for p in names}
    seconds = statistics.median(run["seconds"] for run in runs)
    cpu_s = statistics.median(run["cpu_s"] for run in runs)
    return {"model": name, "source": source, "runs": runs, "median_s": seconds, "median_cpu_s": cpu_s, "phases": phases}


def measure(
    models: dict[str, Path], runs: int, cpus: str, client_cpus: str, workdir: Path, s3: bool, tree: Path
) -> dict[str, Any]:
    """Every case of every model ``runs`` times, interleaved; models maps a name to its SavedModel folder."""
    with _pinned(client_cpus):
        env = {**servers.server_environment(), "PYTHONPATH": str(tree)}
        repositories = {name: workdir / "repositories" / name for name in models}
        for name, folder in models.items():
            shutil.rmtree(repositories[name], ignore_errors=True)
            push(folder, name, str(repositories[name]), env)
        moto = Moto(workdir, client_cpus) if s3 else None
        try:
            cases: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
            for name, folder in models.items():
                cases.append((name, "tensorflow", functools.partial(run_baseline, folder, cpus)))
                local = functools.partial(run_server, str(repositories[name]), name, cpus, workdir, env)
                cases.append((name, "local", local))
                if moto is not None:
                    s3_env = {**env, **moto.env}
                    # A prefix per model: a server started for one model must not load the others too.
                    prefix = f"s3://{BUCKET}/{name}"
                    push(folder, name, prefix, s3_env)
                    remote = functools.partial(run_server, prefix, name, cpus, workdir, s3_env)
                    cases.append((name, "s3", remote))
            results: dict[tuple[str, str], list[dict[str, Any]]] = {(n, s): [] for n, s, _ in cases}
            for _ in range(runs):
                for name, source, run in cases:
                    results[(name, source)].append(run())
        finally:
            if moto is not None:
                moto.stop()
    return {
        "runs": runs,
        "cpus": cpus,
        "poll_s": POLL_S,
        "cases": [summarise(name, source, found) for (name, source), found in results.items()],
    }


@contextlib.contextmanager
def _pinned(cpus: str) -> Iterator[None]:
    """This process (the poller, moto's parent) on the client CPUs while measuring, as the bench's clients are."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(_cpu_list(cpus)))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_list(cpus: str) -> Iterable[int]:
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        yield from range(int(first), int(last or first) + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpus", default="0", help="the server's CPUs (taskset list)")
    parser.add_argument("--client-cpus", default="1", help="the poller's and moto's CPUs")
    parser.add_argument("--models", default="demo,large", help="demo (iris), large (bench/bigmodel.py, 256 MiB)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 repository cases")
    parser.add_argument("--tree", type=Path, default=servers.REPO_ROOT, help="the rtserve source tree to run")
    parser.add_argument("--workdir", type=Path, help="where models and logs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rtserve-coldstart-"))
    print(
        json.dumps(
            run(args.runs, args.cpus, args.client_cpus, args.models.split(","), workdir, not args.no_s3, args.tree),
            indent=1,
        )
    )
    return 0


def run(
    runs: int,
    cpus: str,
    client_cpus: str,
    wanted: list[str],
    workdir: Path,
    s3: bool = True,
    tree: Path = servers.REPO_ROOT,
) -> dict[str, Any]:
    """Write the wanted models into ``workdir`` (once) and measure them: what bench/run.py calls."""
    from bench.run import LARGE_WEIGHTS_MIB, write_large_model  # the same models as the rest of the bench

    workdir.mkdir(parents=True, exist_ok=True)
    models: dict[str, Path] = {}
    env = {**servers.server_environment(), "PYTHONPATH": str(tree)}
    if "demo" in wanted:
        demo = workdir / "models" / servers.MODEL
        if not (demo / "1" / "saved_model.pb").is_file():
            command = [sys.executable, "-m", "service", "demo-model", str(demo)]
            subprocess.run(command, check=True, timeout=600, capture_output=True, env=env)
        models[servers.MODEL] = demo / "1"
    if "large" in wanted:
        models["large"] = write_large_model(workdir / "models" / "large" / "1")
    result = measure(models, runs, cpus, client_cpus, workdir, s3, tree)
    result["titles"] = {servers.MODEL: "demo model", "large": f"{LARGE_WEIGHTS_MIB} MiB of weights"}
    return result


if __name__ == "__main__":
    raise SystemExit(main())
