"""Fixtures for the fleet tests: one fleet per module (starting three TensorFlow processes costs seconds), brought
back to a known state before every test.

The fleet: REPLICAS `rtserve serve` processes on loopback ports, haproxy in front (see fleet_support.py for what
it mirrors of a Kubernetes Service), and a moto S3 server holding the repository, with two models: the demo
`iris`, and `slow`, a model whose every call costs about 20 ms of CPU, whose small queue the overload test fills.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from apptools import free_port
from fleet_support import POLL_INTERVAL_S, SHUTDOWN_DELAY_S, Fleet, Haproxy, Replica
from modelfactory import SLOW_BATCHING, slow_model
from s3tools import FOREIGN_AWS_VARIABLES, MotoServer, S3Server, fake_aws_environment
from service.repository.s3 import S3Repository
from service.tools.push import push_version

REPLICAS = 3

# httpx logs every request at INFO: thousands of lines per scenario would bury a failure's own output.
logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return slow_model(tmp_path_factory.mktemp("slow") / "1")


def replica_environment(s3: S3Server, bucket: str, folder: Path) -> dict[str, str]:
    return {
        **fake_aws_environment(folder),
        "RTSERVE_REPOSITORY": f"s3://{bucket}/models",
        "RTSERVE_S3__ENDPOINT_URL": s3.endpoint_url,
        "RTSERVE_S3__CONNECT_TIMEOUT_S": "1",
        "RTSERVE_S3__READ_TIMEOUT_S": "3",
        "RTSERVE_S3__MAX_ATTEMPTS": "1",
        "RTSERVE_MODELS": "iris,slow",
        "RTSERVE_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
        "RTSERVE_POLL_MAX_BACKOFF_S": str(POLL_INTERVAL_S),  # an outage keeps the cadence: polls stay countable
        "RTSERVE_LOAD_RETRY_INITIAL_S": "1",
        "RTSERVE_LOAD_RETRY_MAX_S": "4",
        "RTSERVE_SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S),
        "RTSERVE_DRAIN_TIMEOUT_S": "10",
        # Three replicas share two cores here: one TensorFlow thread each keeps them from fighting.
        "RTSERVE_TENSORFLOW__INTRA_OP_THREADS": "1",
        "RTSERVE_TENSORFLOW__INTER_OP_THREADS": "1",
        "RTSERVE_BATCHING__OVERRIDES": SLOW_BATCHING,
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, slow_model_dir: Path) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fake_aws_environment(folder).items():
            patch.setenv(name, value)  # for this process's boto3, which arranges the repository
        for name in FOREIGN_AWS_VARIABLES:
            patch.delenv(name, raising=False)
        moto = MotoServer(free_port(), folder / "moto.log")
        moto.start()
        s3 = S3Server(moto)
        bucket = s3.create_bucket()
        repository = S3Repository(bucket, "models", s3.settings())
        sources = {"iris": demo_model_dir, "slow": slow_model_dir}
        for model, source in sources.items():
            push_version(repository, source, model)
        env = replica_environment(s3, bucket, folder)
        patch.setenv("RTSERVE_S3__ENDPOINT_URL", s3.endpoint_url)  # for the CLI commands the tests run
        replicas = [Replica(f"r{i}", free_port(), env, folder) for i in range(REPLICAS)]
        try:
            for replica in replicas:
                replica.process.wait_ready()
            haproxy = Haproxy(folder, free_port(), [(r.name, r.port) for r in replicas])
            try:
                yield Fleet(replicas, haproxy, s3, bucket, repository, sources)
            finally:
                haproxy.stop()
        finally:
            with ThreadPoolExecutor(len(replicas)) as pool:  # each drains for SHUTDOWN_DELAY_S: in parallel
                list(pool.map(lambda r: r.process.terminate(), replicas))
            moto.stop()


@pytest.fixture
def healthy_fleet(fleet: Fleet) -> Fleet:
    """The fleet as every test expects it: S3 up with both models, every replica ready and in rotation."""
    fleet.restore()
    return fleet


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Numbers each scenario measured, written as JSON when the module ends (and to $RTSERVE_FLEET_REPORT)."""
    results: dict[str, Any] = {}
    yield results
    text = json.dumps(results, indent=2, sort_keys=True)
    path = tmp_path_factory.getbasetemp() / "fleet-reliability.json"
    path.write_text(text)
    if extra := os.environ.get("RTSERVE_FLEET_REPORT"):
        Path(extra).write_text(text)
    print(f"\nfleet reliability numbers: {path}\n{text}")
