"""The one start / ready / stop / exit-0 sequence the server tests share (tests/apptools.py running_server)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from apptools import ServerProcess, publish, running_server
from rawhttp import post
from service.repository.local import LocalRepository


def env_for(tmp_path: Path, demo_model_dir: Path) -> dict[str, str]:
    publish(LocalRepository(tmp_path / "models"), "iris", 1, demo_model_dir)
    return {"RTSERVE_REPOSITORY": str(tmp_path / "models"), "RTSERVE_CACHE_DIR": str(tmp_path / "cache")}


def test_it_yields_a_ready_server_and_stops_it_with_sigterm(tmp_path: Path, demo_model_dir: Path) -> None:
    with running_server(env_for(tmp_path, demo_model_dir), tmp_path) as server:
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    assert server.process.returncode == 0
    assert (tmp_path / "server.log").is_file()


def test_a_failing_body_still_stops_the_server_and_is_the_error_reported(tmp_path: Path, demo_model_dir: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="the body failed"),
        running_server(env_for(tmp_path, demo_model_dir), tmp_path) as server,
    ):
        raise RuntimeError("the body failed")
    assert server.process.returncode == 0


def cancel_a_request_at_the_end_of_the_drain(server: ServerProcess) -> socket.socket:
    """Leave a request whose body never ends: the drain (0.5 s) cancels it, and uvicorn logs its traceback."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(post(b"/v1/models/iris:predict", b"Content-Length: 1000\r\n", b"{", False))
    time.sleep(0.5)  # the request reaches the app before the stop
    return sock


def test_a_traceback_in_the_log_fails_unless_allowed(tmp_path: Path, demo_model_dir: Path) -> None:
    env = {**env_for(tmp_path, demo_model_dir), "RTSERVE_DRAIN_TIMEOUT_S": "0.5", "RTSERVE_BODY_TIMEOUT_S": "60"}
    (tmp_path / "strict").mkdir()
    with pytest.raises(AssertionError, match="Traceback"), running_server(env, tmp_path / "strict") as server:
        strict = cancel_a_request_at_the_end_of_the_drain(server)
    strict.close()
    (tmp_path / "lenient").mkdir()
    with running_server(env, tmp_path / "lenient", traceback_allowed=True) as server:
        lenient = cancel_a_request_at_the_end_of_the_drain(server)
    lenient.close()
    assert "Traceback" in server.log_path.read_text(errors="replace")


def test_a_nonzero_exit_fails(tmp_path: Path, demo_model_dir: Path) -> None:
    with pytest.raises(AssertionError), running_server(env_for(tmp_path, demo_model_dir), tmp_path) as server:
        server.process.send_signal(signal.SIGKILL)  # exits -9: not a clean stop
        server.process.wait(30)
    assert server.process.returncode == -signal.SIGKILL


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    env = {"RTSERVE_REPOSITORY": str(tmp_path / "models"), "RTSERVE_MAX_BODY_BYTES": "lots"}
    with pytest.raises(AssertionError, match="exited early"), running_server(env, tmp_path):
        pass
