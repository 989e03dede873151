"""An explicit model set (RTSERVE_MODEL_CONFIG_LIST) end to end: the real server process, real TensorFlow models,
one model from a local base path in TF Serving's layout (zero-padded version folder, folder named unlike the model),
one from an ``s3://`` prefix on a real S3-compatible server (moto), and the repository root no longer scanned.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from apptools import running_server
from conftest import S3Server
from service.repository.local import LocalRepository
from service.repository.s3 import S3Repository

pytestmark = pytest.mark.integration

SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def test_listed_models_serve_from_their_own_base_paths(
    s3_server: S3Server, demo_model_dir: Path, tmp_path: Path
) -> None:
    local_base = tmp_path / "exports" / "iris-prod"
    shutil.copytree(demo_model_dir, local_base / "00000007")
    bucket = s3_server.create_bucket()
    S3Repository(bucket, "team", s3_server.settings()).upload_version("iris_v2", 3, demo_model_dir)
    root = tmp_path / "repo"  # RTSERVE_REPOSITORY still holds a model: the list replaces the scan
    LocalRepository(root).upload_version("unlisted", 1, demo_model_dir)
    model_set = {
        "config": [
            {"name": "iris", "base_path": str(local_base), "version_labels": {"stable": 7}},
            {"name": "remote", "base_path": f"s3://{bucket}/team/iris_v2", "model_version_policy": {"all": {}}},
        ]
    }
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_MODEL_CONFIG_LIST": json.dumps(model_set),
        "RTSERVE_S3__ENDPOINT_URL": s3_server.endpoint_url,
        "RTSERVE_S3__MAX_ATTEMPTS": "1",
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
        "RTSERVE_POLL_INTERVAL_S": "0.5",
    }
    with running_server(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        status = http.get("/v1/models/iris").json()
        assert status["model_version_status"][0]["version"] == "7"
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        answer = http.post("/v1/models/iris/labels/stable:predict", json=SETOSA)
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("X-Model-Version") == "7"
        remote = http.post("/v1/models/remote:predict", json=SETOSA)
        assert remote.status_code == 200, remote.text
        assert remote.headers.get("X-Model-Version") == "3"
        assert http.get("/v1/models/unlisted").status_code == 404
