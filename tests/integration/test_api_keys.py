"""Optional API-key authentication, in-process: every route behind one gate, health and metrics exempt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apptools import publish, running_app, wait_until
from service.app import create_app
from service.repository.local import LocalRepository
from service.settings import AuthSettings, Settings

KEY = "k-3f9a0c1e5b7d"
OTHER_KEY = "k-second-key-for-rotation"
GOOD = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
V2_GOOD = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
# Every kind of route: fast-lane inference (both protocols), FastAPI control plane, the OpenAPI documents.
PROTECTED = [
    ("POST", "/v1/models/iris:predict", GOOD),
    ("POST", "/v2/models/iris/infer", V2_GOOD),
    ("GET", "/v1/models/iris", None),
    ("GET", "/v1/models/iris/metadata", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/iris", None),
    ("GET", "/v2/models/iris/ready", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/no/such/path", None),
]


def write_keys(path: Path, *keys: str) -> None:
    """Replace the file the way a Secret update does: a new file swapped in whole."""
    staged = path.with_name(path.name + ".new")
    staged.write_text("# API keys for rtserve\n\n" + "".join(f"  {key}  \n" for key in keys))
    staged.replace(path)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secret") / "keys"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, keys_file: Path) -> Iterator[TestClient]:
    write_keys(keys_file, KEY)
    root = tmp_path_factory.mktemp("repo")
    publish(LocalRepository(root), "iris", 1, demo_model_dir)
    settings = Settings(
        repository=str(root),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        poll_interval_s=0.5,
        auth=AuthSettings(keys_file=str(keys_file)),
    )
    with running_app(settings) as test_client:
        yield test_client


def call(client: TestClient, method: str, path: str, body: object, headers: dict[str, str] | None = None) -> int:
    return client.request(method, path, json=body, headers=headers).status_code


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_no_key_is_401_with_www_authenticate(client: TestClient, method: str, path: str, body: object) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in response.json()["error"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_wrong_key_is_403(client: TestClient, method: str, path: str, body: object) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": KEY[:-1]}):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, headers
        assert "www-authenticate" not in response.headers
        assert response.json() == {"error": "the API key is not valid"}


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}]
)
def test_right_key_in_either_header_is_let_through(client: TestClient, headers: dict[str, str]) -> None:
    predict = client.post("/v1/models/iris:predict", json=GOOD, headers=headers)
    assert predict.status_code == 200, predict.text
    assert predict.headers["X-Model-Version"] == "1"
    assert client.post("/v2/models/iris/infer", json=V2_GOOD, headers=headers).status_code == 200
    assert client.get("/v1/models/iris", headers=headers).status_code == 200
    assert client.get("/openapi.json", headers=headers).status_code == 200
    # A wrong path with a right key is the router's 404, not the gate's answer.
    assert client.get("/no/such/path", headers=headers).status_code == 404


def test_other_authorization_schemes_are_no_key(client: TestClient) -> None:
    response = client.post("/v1/models/iris:predict", json=GOOD, headers={"Authorization": f"Basic {KEY}"})
    assert response.status_code == 401


def test_health_and_metrics_are_exempt_by_default(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    # Counted per protocol: the TF Serving and V2 paths under their protocol's label, the others under "rest".
    for reason in ("missing_key", "invalid_key"):
        for protocol in ("tfserving", "v2", "rest"):
            assert f'rtserve_auth_failures_total{{protocol="{protocol}",reason="{reason}"}}' in metrics.text
    # Refusals are the gate's, not the models': no inference request was counted with a 401 or 403.
    assert 'code="401"' not in metrics.text
    assert 'code="403"' not in metrics.text


def test_key_rotation_is_picked_up_without_a_restart(client: TestClient, keys_file: Path) -> None:
    old, new = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
    assert call(client, "GET", "/v1/models/iris", None, new) == 403
    write_keys(keys_file, OTHER_KEY)
    try:
        wait_until(lambda: call(client, "GET", "/v1/models/iris", None, new) == 200, 10, what="the new key")
        assert call(client, "GET", "/v1/models/iris", None, old) == 403
    finally:
        write_keys(keys_file, KEY)
        wait_until(lambda: call(client, "GET", "/v1/models/iris", None, old) == 200, 10, what="the old key back")


def test_exemptions_can_be_turned_off(keys_file: Path, tmp_path: Path) -> None:
    auth = AuthSettings(keys_file=str(keys_file), exempt_health=False, exempt_metrics=False)
    app = create_app(Settings(repository=str(tmp_path), cache_dir=str(tmp_path / "cache"), auth=auth))
    plain = TestClient(app.rest.asgi)  # no lifespan: only the gate answers here
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert plain.get(path).status_code == 401, path
    assert plain.get("/v2/health/live", headers={"X-API-Key": KEY}).status_code == 200


def test_a_configured_keys_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    auth = AuthSettings(keys_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="RTSERVE_AUTH__KEYS_FILE: cannot read"):
        create_app(Settings(repository=str(tmp_path), cache_dir=str(tmp_path / "cache"), auth=auth))
