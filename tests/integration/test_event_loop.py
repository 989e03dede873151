"""The event loop is never held for long: liveness answers while the largest allowed requests are processed.

gRPC too: the largest Predict and ModelInfer messages of each kind (bench/grpc_liveness.py builds them) are parsed
and decoded, and their answers built and serialized, in the same codec workers; REST liveness and gRPC health
Check answer within the same bound meanwhile, and each answer is whole. With a zero wait for a busy worker, large
gRPC calls that find it busy are refused UNAVAILABLE at once, as REST answers 503.

The real server process, with limits a quarter of the defaults' so that the suite stays quick, gets the largest
request of each kind those limits allow (bench/liveness.py builds them; its benchmark sends the same ones at the
default limits), one at a time, while a thread asks /v2/health/live every 20 ms. Today's code decodes such bodies
on the event loop (and some in quadratic time), so liveness waits for the whole request; with decoding and
encoding in the codec workers every probe answers quickly. Bounded: each request has a client timeout, each
probe too, and the probe thread stops with the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from apptools import ServerProcess, publish, running_server, wait_until
from bench import grpc_liveness
from bench.liveness import Limits, measure, worst_cases
from service.repository.local import LocalRepository

pytestmark = pytest.mark.integration

LIMITS = Limits(body=16 * 1024 * 1024, elements=4 * 1024 * 1024, strings=256 * 1024, json_values=2 * 1024 * 1024)
# Generous: a probe answered on an idle loop takes milliseconds; today's code holds it for the whole request.
PROBE_BOUND_S = 2.0
REQUEST_TIMEOUT_S = 60.0
CASES = {case.name.split(",")[0]: case for case in worst_cases(LIMITS)}
GRPC_CASES = {case.name.split(",")[0]: case for case in grpc_liveness.worst_cases(LIMITS)}


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    multi_signature_model_dir: Path,
    classify_regress_model_dir: Path,
) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for name, folder in (("iris", demo_model_dir), ("multi", multi_signature_model_dir)):
        publish(LocalRepository(root), name, 1, folder)
    publish(LocalRepository(root), "examples", 1, classify_regress_model_dir)
    return root


def _serve(tmp_path_factory: pytest.TempPathFactory, root: Path, **overrides: str) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("server")
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_MAX_BODY_BYTES": str(LIMITS.body),
        "RTSERVE_MAX_TENSOR_ELEMENTS": str(LIMITS.elements),
        "RTSERVE_MAX_STRING_ELEMENTS": str(LIMITS.strings),
        "RTSERVE_MAX_JSON_VALUES": str(LIMITS.json_values),
        "RTSERVE_LOG_REQUESTS": "false",
        **overrides,
    }
    with running_server(env, folder) as process:
        for model in ("iris", "multi", "examples"):
            wait_until(lambda m=model: _ready(process, m), 60, 0.2, f"model {model}")
        yield process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path_factory, repository)


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


@pytest.mark.parametrize("name", list(GRPC_CASES))
def test_liveness_answers_during_the_largest_grpc_request(server: ServerProcess, name: str) -> None:
    case = GRPC_CASES[name]
    result = grpc_liveness.measure(server.port, server.grpc_port, case, LIMITS, REQUEST_TIMEOUT_S)
    summary = {key: value for key, value in result.items() if key != "answer"}
    assert result["status"] == "OK", summary
    assert grpc_liveness.answer_rows(case, result["answer"]) == {case.rows}, summary
    assert result["live_answers"] > 0 and result["health_answers"] > 0, summary
    assert result["live_worst_s"] < PROBE_BOUND_S, summary
    assert result["health_worst_s"] < PROBE_BOUND_S, summary
    assert server.process.poll() is None


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Iterator[ServerProcess]:
    """One codec worker and no wait for it: a large message that finds it busy is refused at once."""
    yield from _serve(tmp_path_factory, repository, RTSERVE_CODEC_WORKERS="1", RTSERVE_CODEC_WAIT_S="0")


def test_large_grpc_messages_that_find_the_codec_worker_busy_are_refused_unavailable(
    impatient_server: ServerProcess,
) -> None:
    """Today's code parses every message on the event loop, so all of them answer OK (and hold the loop)."""
    cases = [GRPC_CASES["TF Serving Predict float_val"], GRPC_CASES["V2 ModelInfer fp32_contents"]] * 2
    with ThreadPoolExecutor(len(cases)) as pool:
        outcomes = list(
            pool.map(
                lambda case: grpc_liveness.call(impatient_server.grpc_port, case, LIMITS, REQUEST_TIMEOUT_S), cases
            )
        )
    statuses = [status for status, _, _ in outcomes]
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, outcomes
    assert "UNAVAILABLE" in statuses, statuses
    assert all("busy" in message for status, message, _ in outcomes if status == "UNAVAILABLE"), outcomes
    # The pool frees its worker: a large message alone is answered again.
    status, message, answer = grpc_liveness.call(impatient_server.grpc_port, cases[0], LIMITS, REQUEST_TIMEOUT_S)
    assert status == "OK", message
    assert grpc_liveness.answer_rows(cases[0], answer) == {cases[0].rows}
