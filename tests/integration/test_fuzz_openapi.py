"""Property-based fuzzing with schemathesis against the real server process: every answer a 2xx or a 4xx.

Two descriptions drive it: rtserve's own OpenAPI document (``/openapi.json``, whose inference routes declare
their request bodies), and the Open Inference Protocol's ``../shared/specs/open_inference_rest.yaml``. Each
operation gets a bounded number of generated requests, valid and invalid (schemathesis' positive and negative
modes), most of them addressed to the models the server holds so that the body decoders are reached.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from apptools import ServerProcess, publish, running_server
from fakes import FakeLoader
from prerequisites import SHARED, shared_path
from service.app import create_app
from service.repository.local import LocalRepository
from service.settings import Settings

SPEC_NAME = "specs/open_inference_rest.yaml"
SPEC = SHARED / SPEC_NAME
EXAMPLES_PER_OPERATION = 60
REQUEST_TIMEOUT_S = 10.0
# Most requests name a served model and version, so that they get past routing into the decoders; the rest
# are generated freely (and are mostly unknown models: 404).
CONFIG: dict[str, Any] = {
    "dictionaries": {"models": {"values": ["iris", "multi"]}, "versions": {"values": [1]}},
    "parameters": {
        f"path.{name}": {"dictionary": dictionary, "probability": 0.75}
        for name, dictionary in (
            ("model_name", "models"),
            ("version", "versions"),
            ("MODEL_NAME", "models"),
            ("MODEL_VERSION", "versions"),
        )
    },
    "request-timeout": REQUEST_TIMEOUT_S,
    "generation": {"max-examples": EXAMPLES_PER_OPERATION},
}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible, not luck
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, multi_signature_model_dir: Path
) -> Iterator[ServerProcess]:
    with fuzz_target(tmp_path_factory.mktemp("fuzz"), demo_model_dir, multi_signature_model_dir) as process:
        yield process


@pytest.fixture
def own_server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, multi_signature_model_dir: Path
) -> Iterator[ServerProcess]:
    """A server no other test has sent a request to: what its metrics count is this test's own doing."""
    with fuzz_target(tmp_path_factory.mktemp("fuzz-own"), demo_model_dir, multi_signature_model_dir) as process:
        yield process


@contextmanager
def fuzz_target(folder: Path, demo_model_dir: Path, multi_signature_model_dir: Path) -> Iterator[ServerProcess]:
    repository = LocalRepository(folder / "models")
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "multi", 1, multi_signature_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(folder / "models"),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_MAX_BODY_BYTES": str(1024 * 1024),
        "RTSERVE_MAX_TENSOR_ELEMENTS": "100000",
    }
    with running_server(env, folder) as process:
        yield process


def rtserve_document() -> dict[str, Any]:
    """rtserve's OpenAPI document, as the app builds it (test_served_document_is_the_fuzzed_one holds the
    server to it). Built at collection time: schemathesis generates one test per operation from it."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(repository=folder, cache_dir=folder), loader=FakeLoader())
        return app.rest.fastapi.openapi()


def protocol_document() -> dict[str, Any]:
    """The Open Inference Protocol's description, or an empty one when the shared folder is absent."""
    if not SPEC.is_file():
        return {"openapi": "3.0.0", "info": {"title": "absent", "version": "0"}, "paths": {}}
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    # The spec writes its path templates as '${MODEL_NAME}'; the '$' is not part of the URL.
    document["paths"] = {path.replace("${", "{"): item for path, item in document["paths"].items()}
    return document


RTSERVE_DOCUMENT = rtserve_document()
rtserve = schemathesis.openapi.from_dict(RTSERVE_DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))
protocol = schemathesis.openapi.from_dict(protocol_document(), config=SchemathesisConfig.from_dict(CONFIG))


def check(case: Any, base_url: str) -> None:
    response = case.call_and_validate(base_url=base_url, checks=[not_a_server_error], timeout=REQUEST_TIMEOUT_S)
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, response.status_code


@rtserve.parametrize()
@FUZZ_SETTINGS
def test_rtserve_openapi(case: Any, server: ServerProcess) -> None:
    check(case, server.url)


def test_served_document_is_the_fuzzed_one(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/openapi.json", timeout=REQUEST_TIMEOUT_S).json() == RTSERVE_DOCUMENT


def test_the_protocol_spec_is_there() -> None:
    shared_path(SPEC_NAME)
    assert protocol.raw_schema["paths"], SPEC


if SPEC.is_file():

    @protocol.parametrize()
    @FUZZ_SETTINGS
    def test_open_inference_protocol_spec(case: Any, server: ServerProcess) -> None:
        check(case, server.url)

else:  # schemathesis refuses a test with no operations at collection: say why instead

    def test_open_inference_protocol_spec() -> None:
        shared_path(SPEC_NAME)


def test_the_fuzzing_reached_the_models(own_server: ServerProcess) -> None:
    """Most generated requests get past routing to the served models' decoders (which refuse them: random bodies
    do not guess input names; the hand-written corpus in test_hostile_input.py covers the rest).

    Its own fuzzing, against its own server: it holds whether or not the tests above ran, and in any order.
    """

    inference = rtserve.include(method="POST")
    operations = len(list(inference.get_all_operations()))

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_OPERATION * operations)  # as many as the tests above
    @given(case=inference.as_strategy())
    def fuzz_the_inference_routes(case: Any) -> None:
        check(case, own_server.url)

    fuzz_the_inference_routes()
    counted: dict[str, float] = {}
    for line in httpx.get(own_server.url + "/metrics", timeout=REQUEST_TIMEOUT_S).text.splitlines():
        if line.startswith("rtserve_requests_total{") and ('model_name="iris"' in line or 'model_name="multi"' in line):
            code = line.split('code="', 1)[1].split('"', 1)[0]
            counted[code] = counted.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
    print(f"answers to fuzzed requests for served models, by status: {counted}")  # shown with pytest -s or -rA
    assert sum(counted.values()) > 100, counted
    assert counted.get("400", 0) > 0, counted
    assert not [code for code in counted if code.startswith("5")], counted
