"""Fixtures for integration tests: moto's S3 server as a real process on a loopback port.

``s3_server`` is one moto process for the whole session (starting it takes a second or two); tests that stop
it to simulate an outage get it restarted, on the same port, before the next test. Buckets do not survive a
restart (moto keeps them in memory), so every test makes its own with ``create_bucket()``. The server classes
live in tests/s3tools.py, shared with the fleet suite; ``S3Server`` is re-exported here for the tests that
import it from this conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apptools import free_port
from fakes import write_fake_saved_model
from s3tools import FOREIGN_AWS_VARIABLES, MotoServer, S3Server, fake_aws_environment


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
    for name, value in fake_aws_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in FOREIGN_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    _moto_server.start()  # a previous test may have stopped it
    yield S3Server(_moto_server)
    _moto_server.start()


@pytest.fixture
def fake_saved_model(tmp_path: Path) -> Callable[[str], Path]:
    """``fake_saved_model("v1")`` makes a fresh fake SavedModel folder under tmp_path."""
    return lambda seed: write_fake_saved_model(tmp_path / f"source-{seed}", seed)
