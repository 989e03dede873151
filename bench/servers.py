"""The servers under test, how each is started, and the lanes (protocol + path) each one is measured on.

Every server listens on 127.0.0.1 only, is pinned to the server CPUs with ``taskset`` and serves the same
SavedModel folder. A server process is started in its own session, so stopping it (SIGTERM, then SIGKILL after a
bounded wait) reaches exactly the processes it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench import envs
from bench.grpc_payloads import MODEL_INFER_METHOD, PREDICT_METHOD

REPO_ROOT = envs.BENCH_DIR.parent
RTSERVE = REPO_ROOT / ".venv" / "bin" / "rtserve"
MODEL = "iris"
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Lane:
    """One way of asking one server: its protocol (see bench.payloads) and path; ``verify`` checks the values.

    A gRPC lane (``kind="grpc"``, protocols in bench.grpc_payloads) goes to the server's gRPC port, its path is the
    method's full path; ``counter`` is rtserve's ``protocol`` label for it on ``rtserve_requests_total``.
    """

    name: str
    protocol: str
    path: str
    verify: bool = True
    kind: str = "rest"
    counter: str = ""


@dataclass(frozen=True)
class ServerSpec:
    name: str
    title: str
    venv: str  # "rtserve" (the project's own .venv) or a bench venv name
    lanes: tuple[Lane, ...]
    how: str  # one line for the report: how it runs
    extra_ports: int = 0  # ports beside the HTTP one; the first is the gRPC port of a server with gRPC lanes


TF_LANE = Lane("tfserving", "tfserving", f"/v1/models/{MODEL}:predict")
V2_PATH = f"/v2/models/{MODEL}/infer"
TF_GRPC_LANE = Lane("tfserving-grpc", "tfserving-grpc", PREDICT_METHOD, kind="grpc", counter="grpc-tfserving")
V2_GRPC_LANE = Lane("v2-grpc", "v2-grpc", MODEL_INFER_METHOD, kind="grpc", counter="grpc-v2")
RTSERVE_LANES = (
    TF_LANE,
    Lane("v2-json", "v2-json", V2_PATH),
    Lane("v2-binary", "v2-binary", V2_PATH),
    TF_GRPC_LANE,
    V2_GRPC_LANE,
)
BEFORE_REF = "af9d972"  # issue 13's starting commit: the "before" of its before/after ratios
RTSERVE_VARIANTS = ("rtserve", "rtserve-before")  # the same command and .venv, each on its own source tree
# PyTriton's dynamic batcher, set like rtserve's batching defaults (max_batch_size 256, batch_timeout_us 1000).
# No queue delay: Triton's batcher would wait it even for a lone request on an idle model (rtserve does not);
# with 0 it still merges what queues while the model runs, and its c=32 rate was the same within noise.
PYTRITON_MAX_BATCH_SIZE, PYTRITON_MAX_QUEUE_DELAY_US = 256, 0

SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "rtserve",
        "rtserve",
        "rtserve",
        RTSERVE_LANES,
        "`rtserve serve --repository DIR --host 127.0.0.1 --port P` with `RTSERVE_GRPC_PORT` a free port (its"
        " defaults: one uvicorn process, the gRPC server in the same process and event loop)",
        extra_ports=1,
    ),
    ServerSpec(
        "rtserve-before",
        f"rtserve before ({BEFORE_REF})",
        "rtserve",
        RTSERVE_LANES,
        "the same `rtserve serve` command and `.venv`, with `PYTHONPATH` set to a `git archive` of the ref"
        " (`bench.run --before-ref`, default issue 13's starting commit) in `bench/build/rtserve-<sha>`",
        extra_ports=1,
    ),
    ServerSpec(
        "floor-asgi",
        "floor: bare ASGI",
        "rtserve",
        (Lane("tfserving", "tfserving", f"/v1/models/{MODEL}:predict", verify=False),),
        "`bench/peers/floor_asgi.py` on uvicorn (uvloop + httptools, no access log): orjson -> numpy -> answer",
    ),
    ServerSpec(
        "floor-fastapi",
        "floor: FastAPI",
        "rtserve",
        (Lane("tfserving", "tfserving", f"/v1/models/{MODEL}:predict", verify=False),),
        "`bench/peers/floor_fastapi.py`: the same work in a FastAPI route with Request/Response objects",
    ),
    ServerSpec(
        "kserve",
        "KServe",
        "kserve",
        (TF_LANE, Lane("v2-json", "v2-json", V2_PATH), Lane("v2-binary", "v2-binary", V2_PATH), V2_GRPC_LANE),
        "`bench/peers/kserve_model.py`: `kserve.ModelServer` (1 worker, its gRPC server on (KServe's default) for"
        " the V2 gRPC lane, latency log and access log off) with a `kserve.Model` whose `predict` calls the signature",
        extra_ports=1,
    ),
    ServerSpec(
        "mlserver",
        "MLServer",
        "mlserver",
        (Lane("v2-json", "v2-json", V2_PATH), V2_GRPC_LANE),
        "`mlserver start` with a custom `MLModel` runtime calling the signature; `parallel_workers: 0` (inference in"
        " the server process: the default worker pool crashes with current uvloop), `debug: false` (no access log);"
        " its gRPC server (on by default) for the V2 gRPC lane",
        extra_ports=2,
    ),
    ServerSpec(
        "mlserver-batching",
        "MLServer, adaptive batching",
        "mlserver",
        (Lane("v2-json", "v2-json", V2_PATH), V2_GRPC_LANE),
        "the same MLServer with its adaptive batching on in `model-settings.json`: `max_batch_size: 32`,"
        " `max_batch_time: 0.002` (s)",
        extra_ports=2,
    ),
    ServerSpec(
        "seed",
        "seed: Flask + Keras",
        "kserve",
        (Lane("tfserving", "tfserving", "/predict"),),
        "`bench/peers/seed_flask.py`: Flask `app.run` (Werkzeug dev server, threaded: its default), Keras"
        " `model.predict` per request",
    ),
    ServerSpec(
        "pytriton",
        "PyTriton",
        "pytriton",
        (Lane("v2-json", "v2-json", V2_PATH), Lane("v2-binary", "v2-binary", V2_PATH), V2_GRPC_LANE),
        "`bench/peers/pytriton_model.py`: `Triton` (its C++ HTTP and gRPC front ends, CPU-only) with each model of"
        " the repository folder (its signature) bound by `triton.bind` under `@batch`, dynamic batching on"
        f" (`max_batch_size` {PYTRITON_MAX_BATCH_SIZE}, `max_queue_delay_microseconds` {PYTRITON_MAX_QUEUE_DELAY_US});"
        " the Python stub finds libpython through `LD_LIBRARY_PATH`",
        extra_ports=2,
    ),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Running:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int | None = None
    started_s: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server's processes (all their threads): the process and what it
        started in its session (PyTriton's C++ server and Python stub are children of the script)."""
        return session_cpu_seconds(self.pid)

    def stop(self) -> None:
        stop_session(self.process)


def _session_stats(session: int) -> dict[int, list[str]]:
    """/proc/<pid>/stat fields (after the command name) of the live processes in a session, by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found[int(stat.parent.name)] = fields
    return found


def session_pids(session: int) -> list[int]:
    return sorted(_session_stats(session))


def session_cpu_seconds(session: int) -> float:
    """User + system CPU seconds of the live processes whose session id is ``session``."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[11]) + int(fields[12]) for fields in _session_stats(session).values()) / ticks


# MLServer's adaptive batching settings (model-settings.json) for each MLServer variant: none for the default.
MLSERVER_BATCHING: dict[str, dict[str, float]] = {
    "mlserver": {},
    "mlserver-batching": {"max_batch_size": 32, "max_batch_time": 0.002},
}


def _command(
    spec: ServerSpec,
    port: int,
    extra: list[int],
    repository: Path,
    workdir: Path,
    options: tuple[str, ...],
    model: str = MODEL,
    batching: dict[str, float] | None = None,
) -> list[str]:
    """The command line of ``spec`` serving ``model`` (version 1 in ``repository``); ``batching`` replaces the
    MLServer variant's adaptive batching settings (MLSERVER_BATCHING) for another bench case."""
    model_dir = str(repository / model / "1")
    if spec.name in RTSERVE_VARIANTS:
        cache = workdir / f"{spec.name}-cache"
        return [
            str(RTSERVE),
            "serve",
            "--repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(cache),
            "--log-level",
            "warning",
            *options,
        ]
    if spec.name in ("floor-asgi", "floor-fastapi"):
        module = "bench.peers." + spec.name.replace("-", "_")
        return [sys.executable, "-m", module, "--port", str(port)]
    python = str(envs.python_of(spec.venv))
    peers = envs.BENCH_DIR / "peers"
    if spec.name == "kserve":
        return [
            python,
            str(peers / "kserve_model.py"),
            "--http_port",
            str(port),
            "--grpc_port",
            str(extra[0]),
            "--model_name",
            model,
            "--model_dir",
            model_dir,
        ]
    if spec.name == "seed":
        return [python, str(peers / "seed_flask.py"), "--port", str(port), "--model_dir", model_dir]
    if spec.name == "pytriton":
        return [
            python,
            str(peers / "pytriton_model.py"),
            "--http-port",
            str(port),
            "--grpc-port",
            str(extra[0]),
            "--metrics-port",
            str(extra[1]),
            *(f"--model={name}={folder}" for name, folder in latest_versions(repository)),
            "--max-batch-size",
            str(PYTRITON_MAX_BATCH_SIZE),
            "--max-queue-delay-us",
            str(PYTRITON_MAX_QUEUE_DELAY_US),
            "--workspace",
            str(workdir / "pytriton-workspace"),
        ]
    if spec.name in MLSERVER_BATCHING:
        folder = workdir / spec.name
        (folder / model).mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": extra[0],
            "metrics_port": extra[1],
            "parallel_workers": 0,
            "debug": False,
        }
        (folder / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        model_settings = {
            "name": model,
            "implementation": "mlserver_runtime.SavedModelSignature",
            "parameters": {"uri": model_dir},
            **(MLSERVER_BATCHING[spec.name] if batching is None or spec.name == "mlserver" else batching),
        }
        (folder / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2), encoding="utf-8")
        # Through the venv's python, not its ``mlserver`` script: a script's shebang names the folder the venv was
        # made in, and breaks when the venv is reached through another path (a worktree's bench/.venvs link).
        return [str(envs.python_of(spec.venv)), "-m", "mlserver.cli.main", "start", str(folder)]
    raise ValueError(spec.name)


def latest_versions(repository: Path) -> list[tuple[str, Path]]:
    """(model name, its highest numbered version folder) for every model in a repository folder, by name: what a
    server that takes explicit model folders (PyTriton) is given, so it serves what rtserve would find there."""
    found = []
    for model in sorted(path for path in repository.iterdir() if path.is_dir()):
        versions = [path for path in model.iterdir() if path.is_dir() and path.name.isdigit()]
        if versions:
            found.append((model.name, max(versions, key=lambda path: int(path.name))))
    return found


# Settings given to rtserve on purpose (``bench.run --rtserve-env NAME=VALUE``, for tuning runs); recorded.
RTSERVE_OVERRIDES: dict[str, str] = {}
# The source tree each rtserve variant imports ``service`` from (its PYTHONPATH); bench.run sets the "before" one.
RTSERVE_TREES: dict[str, Path] = {"rtserve": REPO_ROOT}


def server_environment() -> dict[str, str]:
    """The bench's environment without anything that would change a server's defaults (but the overrides).

    gRPC is off (``RTSERVE_GRPC_PORT=0``) unless the caller gives a port, so that a bench server never contends
    for the default gRPC port; ``start`` gives rtserve a free one for its gRPC lanes.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RTSERVE_", "PYTHON"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", RTSERVE_GRPC_PORT="0", **RTSERVE_OVERRIDES)
    return env


def spec_environment(spec: ServerSpec, grpc_port: int | None) -> dict[str, str]:
    """server_environment() plus what this server needs: its gRPC port, its PYTHONPATH, libpython's directory."""
    env = server_environment()
    if spec.name in RTSERVE_VARIANTS:
        if grpc_port is not None:
            env["RTSERVE_GRPC_PORT"] = str(grpc_port)
        tree = RTSERVE_TREES.get(spec.name)
        if tree is None:
            raise ValueError(f"{spec.name}: no source tree to run (bench.run extracts it, see --before-ref)")
        env["PYTHONPATH"] = str(tree)
    elif spec.name.startswith("floor-"):
        env["PYTHONPATH"] = str(REPO_ROOT)
    elif spec.name in MLSERVER_BATCHING:
        env["PYTHONPATH"] = str(envs.BENCH_DIR / "peers")
    elif spec.name == "pytriton":
        # Triton's Python backend stub links libpython; the bench venvs are made from this interpreter (envs.py).
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            part for part in (str(sysconfig.get_config_var("LIBDIR")), env.get("LD_LIBRARY_PATH", "")) if part
        )
    return env


def pinned(cpus: str, command: list[str]) -> list[str]:
    """``command`` under taskset: the process and every child it starts (affinity is inherited) on ``cpus``."""
    return ["taskset", "-c", cpus, *command]


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process started in a session of its own (``spawn_pinned``), then (bounded) until every
    process of its session is gone: the next server must not start beside a peer's children still shutting down
    (PyTriton's Triton server)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while session_pids(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):  # what is left in its session after that goes at once
        os.killpg(process.pid, signal.SIGKILL)


def spawn_pinned(
    cpus: str, command: list[str], log: IO[bytes], workdir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A server process pinned to ``cpus``, in a session of its own (so it stops as a group), logging to ``log``."""
    return subprocess.Popen(
        pinned(cpus, command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )


def start(
    spec: ServerSpec,
    repository: Path,
    workdir: Path,
    cpus: str,
    probe: tuple[str, bytes, dict[str, str]],
    options: tuple[str, ...] = (),
    model: str = MODEL,
    batching: dict[str, float] | None = None,
) -> Running:
    """Start a server pinned to ``cpus`` and wait until ``probe`` (path, body, headers) answers 200 (``model`` and
    ``batching``: see _command)."""
    port = free_port()
    extra = [free_port() for _ in range(spec.extra_ports)]
    command = _command(spec, port, extra, repository, workdir, options, model, batching)
    grpc_port = extra[0] if any(lane.kind == "grpc" for lane in spec.lanes) else None
    env = spec_environment(spec, grpc_port)
    log_path = workdir / "logs" / f"{spec.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = spawn_pinned(cpus, command, log, workdir, env)
    running = Running(spec, process, port, log_path, grpc_port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    path, body, headers = probe
    while time.monotonic() < deadline:
        if not running.alive():
            raise RuntimeError(f"{spec.name} exited ({process.returncode}) while starting; see {log_path}")
        try:
            status, _, _ = request(port, path, body, headers, timeout=10.0)
            if status == 200:
                return running
        except OSError:
            pass
        time.sleep(0.5)
    running.stop()
    raise RuntimeError(f"{spec.name} did not answer within {READY_TIMEOUT_S:.0f} s; see {log_path}")


def request(
    port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 30.0, method: str = "POST"
) -> tuple[int, bytes, dict[str, str]]:
    """One request to 127.0.0.1:port: (status, body, lower-cased headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, data, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()
