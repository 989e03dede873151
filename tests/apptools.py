"""Helpers to run rtserve for tests: in-process through Starlette's TestClient, or as a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from service.app import create_app
from service.repository.base import Repository
from service.runtime.base import Loader
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, timeout_s: float = 60.0, interval_s: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


def publish(repository: Repository, model: str, version: int, saved_model: Path) -> None:
    """Publish a SavedModel folder the way `rtserve push` does (manifest last)."""
    repository.upload_version(model, version, saved_model)


@contextmanager
def running_app(settings: Settings, ready: bool = True, loader: Loader | None = None) -> Iterator[TestClient]:
    """The app in-process with its lifespan (model manager) running; waits for readiness by default."""
    app = create_app(settings, loader=loader)
    with TestClient(app.rest.asgi, raise_server_exceptions=False) as client:
        if ready:
            wait_until(lambda: client.get("/v2/health/ready").status_code == 200, what="the app to be ready")
        yield client


class ServerProcess:
    """`rtserve serve` as a real process on a loopback port."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path, command: Sequence[str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # A free gRPC port of its own unless the test names one (0 turns gRPC off): never the shared default.
        self.grpc_port = int(env.get("RTSERVE_GRPC_PORT") or free_port())
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {
            **os.environ,
            **env,
            "RTSERVE_PORT": str(port),
            "RTSERVE_GRPC_PORT": str(self.grpc_port),
            "RTSERVE_HOST": "127.0.0.1",
        }
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if command is None:
            command = rtserve_command("serve")
        self.process = subprocess.Popen(list(command), env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"rtserve exited early:\n{self.log()}")
            try:
                return httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s, 0.1, "rtserve to be ready")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def rtserve_command(*args: str) -> list[str]:
    """The `rtserve` command as the venv installs it (its module when the venv has no script)."""
    rtserve = shutil.which("rtserve", path=str(Path(sys.executable).parent))
    return [rtserve, *args] if rtserve else [sys.executable, "-m", "service", *args]


def tensorflow_model_server_command(*args: str) -> list[str]:
    """TF Serving's command line as rtserve installs it (the console script, or its module when the venv's scripts
    predate it)."""
    script = shutil.which("tensorflow_model_server", path=str(Path(sys.executable).parent))
    return [script, *args] if script else [sys.executable, "-m", "service.compat.main", *args]


@contextmanager
def running_server(
    env: Mapping[str, str],
    folder: Path,
    *,
    traceback_allowed: bool = False,
    ready_timeout_s: float = 90.0,
    log_name: str = "server.log",
    command: Sequence[str] | None = None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """`rtserve serve` with ``env`` on a free loopback port, logging to ``folder/log_name``, ready when yielded.

    On the way out it is stopped with SIGTERM and must exit 0 with no traceback in its log (unless
    ``traceback_allowed``: a test whose server is expected to log one says so). When the body raised, the server
    is still stopped and the body's error is the one reported. ``command`` replaces `rtserve serve` (e.g.
    tensorflow_model_server_command), listening on ``port``.
    """
    process = ServerProcess(env, port or free_port(), folder / log_name, command)
    try:
        process.wait_ready(ready_timeout_s)
        yield process
    finally:
        exit_code = process.terminate()
    log = process.log_path.read_text(errors="replace")
    assert exit_code == 0, log
    if not traceback_allowed:
        assert "Traceback" not in log, log


# ---- tensorflow_model_server as TF Serving is started (tests of the command, REST and gRPC)


def tf_serving_base(root: Path, name: str, saved_model: Path, version: str = "00000123") -> Path:
    """A TF Serving base path ``root/models/name``: the version folders straight under it."""
    base = root / "models" / name
    shutil.copytree(saved_model, base / version)
    return base


def tf_serving_config_file(path: Path, **bases: Path) -> Path:
    """A text-format ModelServerConfig serving each model from its base path."""
    models = "".join(
        f"  config {{\n    name: '{name}'\n    base_path: '{base}'\n    model_platform: 'tensorflow'\n  }}\n"
        for name, base in bases.items()
    )
    path.write_text("model_config_list {\n" + models + "}\n")
    return path


def tf_serving_one_model(rest: int, grpc: int, base: Path, *extra: str) -> list[str]:
    """The command line of TF Serving's image entrypoint (tf_serving_entrypoint.sh), on free ports."""
    return tensorflow_model_server_command(
        f"--port={grpc}", f"--rest_api_port={rest}", f"--model_name={base.name}", f"--model_base_path={base}", *extra
    )


def tf_serving_polled_config(rest: int, grpc: int, config_file: Path) -> list[str]:
    """A model config file re-read every second, versions polled every second."""
    return tensorflow_model_server_command(
        f"--port={grpc}",
        f"--rest_api_port={rest}",
        f"--model_config_file={config_file}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
    )


def tf_serving_env(root: Path, grpc: int) -> dict[str, str]:
    """The environment such a command runs in here: its cache under ``root``, the gRPC port named."""
    return {"RTSERVE_CACHE_DIR": str(root / "cache"), "RTSERVE_GRPC_PORT": str(grpc)}
