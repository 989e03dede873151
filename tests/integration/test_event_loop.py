"""The event loop is never held for long: liveness answers while the largest allowed requests are processed.

The real server process, with limits a quarter of the defaults' so that the suite stays quick, gets the largest
request of each kind those limits allow (bench/liveness.py builds them; its benchmark sends the same ones at the
default limits), one at a time, while a thread asks /v2/health/live every 20 ms. Today's code decodes such bodies
on the event loop (and some in quadratic time), so liveness waits for the whole request; with decoding and
encoding in the codec workers every probe answers quickly. Bounded: each request has a client timeout, each
probe too, and the probe thread stops with the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apptools import ServerProcess, publish, running_server, wait_until
from bench.liveness import Limits, measure, worst_cases
from service.repository.local import LocalRepository

pytestmark = pytest.mark.integration

LIMITS = Limits(body=16 * 1024 * 1024, elements=4 * 1024 * 1024, strings=256 * 1024, json_values=2 * 1024 * 1024)
# Generous: a probe answered on an idle loop takes milliseconds; today's code holds it for the whole request.
PROBE_BOUND_S = 2.0
REQUEST_TIMEOUT_S = 60.0
CASES = {case.name.split(",")[0]: case for case in worst_cases(LIMITS)}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    multi_signature_model_dir: Path,
    classify_regress_model_dir: Path,
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    for name, folder in (("iris", demo_model_dir), ("multi", multi_signature_model_dir)):
        publish(LocalRepository(root), name, 1, folder)
    publish(LocalRepository(root), "examples", 1, classify_regress_model_dir)
    folder = tmp_path_factory.mktemp("server")
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_MAX_BODY_BYTES": str(LIMITS.body),
        "RTSERVE_MAX_TENSOR_ELEMENTS": str(LIMITS.elements),
        "RTSERVE_MAX_STRING_ELEMENTS": str(LIMITS.strings),
        "RTSERVE_MAX_JSON_VALUES": str(LIMITS.json_values),
        "RTSERVE_LOG_REQUESTS": "false",
    }
    with running_server(env, folder) as process:
        for model in ("iris", "multi", "examples"):
            wait_until(lambda m=model: _ready(process, m), 60, 0.2, f"model {model}")
        yield process


def _ready(process: ServerProcess, model: str) -> bool:
    import httpx

    return httpx.get(f"{process.url}/v2/models/{model}/ready", timeout=5).status_code == 200


@pytest.mark.parametrize("name", list(CASES))
def test_liveness_answers_during_the_largest_request(server: ServerProcess, name: str) -> None:
    result = measure(server.port, server.process.pid, CASES[name], REQUEST_TIMEOUT_S)
    assert result["status"] < 500, result
    assert result["live_answers"] > 0, result
    assert result["live_worst_s"] < PROBE_BOUND_S, result
    assert server.process.poll() is None
