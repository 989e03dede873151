"""Moto's S3 server as a real process on a loopback port, for every suite that needs an S3-compatible store.

Buckets do not survive a restart (moto keeps them in memory).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3

from service.settings import S3Settings

REGION = "us-east-1"
START_TIMEOUT_S = 30.0


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

    @property
    def running(self) -> bool:
        return self._server.running

    def bucket_exists(self, name: str) -> bool:
        return any(bucket["Name"] == name for bucket in self.client().list_buckets().get("Buckets", []))

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


def fake_aws_environment(folder: Path) -> dict[str, str]:
    """Fake credentials (moto accepts any) and no developer ~/.aws or instance metadata service."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Variables that would point boto3 somewhere else than the test server.
FOREIGN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
