"""Hostile models through the real server: a tampered version and graphs with file ops never serve.

The server process serves ``iris`` from a local repository beside two models whose graphs read or write files;
then a version 2 of ``iris`` whose variables were changed after its manifest was written arrives. Neither kind
ever answers a request, ``iris`` version 1 keeps serving, and each failure is in the status and the metrics.
Models that hide their file access in a serialized tf.data graph run by DatasetFromGraph are refused the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from apptools import publish, running_app, running_server, wait_until
from modelfactory import dataset_reads_file_model, dataset_saves_model, writes_file_model
from service.repository.local import LocalRepository
from service.settings import Settings

PREDICT = "/v1/models/iris:predict"
SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def status_of(url: str, model: str) -> dict[str, Any]:
    body = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()
    return {s["version"]: s for s in body.get("model_version_status", [])}


def failed(url: str, model: str, version: str) -> bool:
    status = status_of(url, model).get(version)
    return status is not None and status["state"] == "END" and status["status"]["error_message"] != ""


def scrape(url: str, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    lines = httpx.get(url + "/metrics", timeout=10).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(name + "{") and all(w in line for w in wanted)
    )


def tampered_copy(source: Path, staging: Path) -> Path:
    """``source`` published with its manifest, then one byte of its variables changed (same size)."""
    publish(LocalRepository(staging), "iris", 2, source)
    folder = staging / "iris" / "2"
    data = next((folder / "variables").glob("variables.data-*"))
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    return folder


def test_tampered_version_and_file_op_models_never_serve(
    demo_model_dir: Path, reads_file_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "reader", 1, reads_file_model_dir)
    written = tmp_path / "written-by-the-model.txt"
    publish(repository, "writer", 1, writes_file_model(tmp_path / "writer" / "1", str(written)))
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.3",
        "RTSERVE_LOAD_RETRY_INITIAL_S": "0.5",
    }
    with running_server(env, tmp_path) as server:
        for model, op in (("reader", "ReadFile"), ("writer", "WriteFile")):
            wait_until(lambda m=model: failed(server.url, m, "1"), 60, what=f"{model} to be refused")
            message = status_of(server.url, model)["1"]["status"]["error_message"]
            assert op in message
            assert f"RTSERVE_ALLOWED_FILE_OPS={op}" in message
            refused = httpx.post(f"{server.url}/v1/models/{model}:predict", json={"instances": [1.0]}, timeout=10)
            assert refused.status_code == 404
            assert scrape(server.url, "rtserve_model_loads_total", model_name=model, outcome="failure") >= 1
        assert not written.exists(), "a refused model ran"

        # A version whose bytes differ from its manifest: refused at download, version 1 keeps serving.
        tampered_copy(demo_model_dir, tmp_path / "staging").rename(root / "iris" / "2")
        wait_until(lambda: failed(server.url, "iris", "2"), 60, what="the tampered version to fail")
        status = status_of(server.url, "iris")["2"]["status"]
        assert status["error_code"] == "DATA_LOSS"
        assert "does not match its sha256" in status["error_message"]
        for _ in range(20):
            response = httpx.post(server.url + PREDICT, json=SETOSA, timeout=10)
            assert response.status_code == 200
            assert response.headers["X-Model-Version"] == "1"
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
        assert (
            scrape(server.url, "rtserve_model_loads_total", model_name="iris", model_version="2", outcome="failure")
            >= 1
        )
        assert not any(path.name.startswith("2") for path in (tmp_path / "cache").glob("iris/*")), "kept tampered bytes"


SECRET = "rtserve-api-key-5ec2e7"


def test_serialized_dataset_escapes_never_run(demo_model_dir: Path, tmp_path: Path) -> None:
    """The escape of issue 9: a tf.data graph held in a string constant, run with DatasetFromGraph, reads an
    API-keys file (TextLineDataset) or writes a snapshot (SaveDatasetV2). Both are refused before TensorFlow
    loads them: their status names DatasetFromGraph, the secret is in no answer, the snapshot never appears."""
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(SECRET + "\n")
    snapshot = tmp_path / "written-by-save-dataset"
    root = tmp_path / "models"
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "leaker", 1, dataset_reads_file_model(tmp_path / "leaker" / "1", str(keys_file)))
    publish(repository, "snapshotter", 1, dataset_saves_model(tmp_path / "snapshotter" / "1", str(snapshot)))
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.3",
    }
    with running_server(env, tmp_path) as server:
        answers = []
        for model in ("leaker", "snapshotter"):
            wait_until(lambda m=model: failed(server.url, m, "1"), 60, what=f"{model} to be refused")
            message = status_of(server.url, model)["1"]["status"]["error_message"]
            assert "DatasetFromGraph (rebuilds a graph" in message
            assert "RTSERVE_ALLOWED_FILE_OPS=" in message
            for route in (f"/v1/models/{model}:predict", f"/v2/models/{model}/infer"):
                body = {"instances": [1.0]} if route.startswith("/v1") else {"inputs": []}
                answers.append(httpx.post(server.url + route, json=body, timeout=10))
            answers.append(httpx.get(f"{server.url}/v1/models/{model}", timeout=10))
            assert scrape(server.url, "rtserve_model_loads_total", model_name=model, outcome="failure") >= 1
        assert [a.status_code for a in answers if "predict" in str(a.url) or "infer" in str(a.url)] == [404] * 4
        assert all(SECRET not in answer.text for answer in answers)
        assert httpx.post(server.url + PREDICT, json=SETOSA, timeout=10).status_code == 200
        assert not snapshot.exists(), "the snapshot was written"
        assert SECRET not in server.log()
    assert not snapshot.exists()


@pytest.mark.parametrize("allowed", ["ReadFile", "MatMul, ReadFile"])
def test_allowlisted_file_op_model_serves(reads_file_model_dir: Path, tmp_path: Path, allowed: str) -> None:
    root = tmp_path / "models"
    publish(LocalRepository(root), "reader", 1, reads_file_model_dir)
    settings = Settings(
        repository=str(root),
        cache_dir=str(tmp_path / "cache"),
        allowed_file_ops=allowed,  # type: ignore[arg-type]  # parsed like the environment variable
    )
    with running_app(settings) as client:
        response = client.post("/v1/models/reader:predict", json={"instances": [1.0, 2.0]})
        assert response.status_code == 200, response.text
        assert json.loads(response.text) == {"predictions": [6.0, 7.0]}
