"""Fixtures for integration tests: moto's S3 server as a real process on a loopback port.

``s3_server`` is one moto process for the whole session (starting it takes a second or two); tests that stop
it to simulate an outage get it restarted, on the same port, before the next test. Buckets do not survive a
restart (moto keeps them in memory), so every test makes its own with ``create_bucket()``.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from fakes import write_fake_saved_model
from service.settings import S3Settings

REGION = "us-east-1"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1:<port>, stoppable and restartable on the same port."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        command = [sys.executable, "-m", "moto.server", "-p", str(self.port), "-H", "127.0.0.1"]
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_ready()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"moto server exited early; see {self._log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {START_TIMEOUT_S}s; see {self._log_path}")


class S3Server:
    """What a test gets: the server controls, its endpoint, and helpers for buckets and settings."""

    def __init__(self, server: MotoServer) -> None:
        self._server = server
        self.endpoint_url = server.endpoint_url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def settings(self, **overrides: Any) -> S3Settings:
        """Small timeouts and a single attempt, so that an outage fails a test fast instead of hanging it."""
        values: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "connect_timeout_s": 1.0,
            "read_timeout_s": 5.0,
            "max_attempts": 1,
        }
        values.update(overrides)
        return S3Settings(**values)

    @functools.cached_property
    def _client(self) -> Any:
        return boto3.session.Session(region_name=REGION).client("s3", endpoint_url=self.endpoint_url)

    def client(self) -> Any:
        """A plain boto3 client on the server, for arranging objects behind a repository's back."""
        return self._client

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"rtserve-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket


@pytest.fixture(scope="session")
def _moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log_path = tmp_path_factory.mktemp("moto") / "moto-server.log"
    server = MotoServer(free_port(), log_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(_moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3Server]:
    """A running moto S3 server, with fake AWS credentials in the environment (moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # Keep a developer's ~/.aws and any instance metadata service out of the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    _moto_server.start()  # a previous test may have stopped it
    yield S3Server(_moto_server)
    _moto_server.start()


@pytest.fixture
def fake_saved_model(tmp_path: Path) -> Callable[[str], Path]:
    """``fake_saved_model("v1")`` makes a fresh fake SavedModel folder under tmp_path."""
    return lambda seed: write_fake_saved_model(tmp_path / f"source-{seed}", seed)
