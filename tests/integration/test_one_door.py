"""Issue 10 part 2 over the real app: what a client reads names models and versions, never the server's files."""

from __future__ import annotations

from pathlib import Path

from apptools import publish, running_app, wait_until
from service.repository.local import LocalRepository
from service.settings import Settings


def test_a_failed_load_names_the_model_and_version_not_the_cache_folder(
    demo_model_dir: Path, corrupt_model_dir: Path, tmp_path: Path
) -> None:
    root, cache = tmp_path / "models", tmp_path / "cache"
    repository = LocalRepository(root)
    publish(repository, "iris", 1, demo_model_dir)
    publish(repository, "broken", 1, corrupt_model_dir)
    settings = Settings(repository=str(root), cache_dir=str(cache), poll_interval_s=0.3, load_retry_initial_s=0.5)
    with running_app(settings) as client:

        def status() -> dict[str, str]:
            versions = client.get("/v1/models/broken").json().get("model_version_status", [])
            return versions[0]["status"] if versions else {}

        wait_until(lambda: status().get("error_message"), 60, what="the corrupt version to fail")
        message = status()["error_message"]
        assert str(cache) not in message and str(tmp_path) not in message
        assert "model 'broken' version 1" in message
        assert client.get("/v1/models/iris").status_code == 200  # the good model serves meanwhile


def test_a_missing_signature_is_400_on_every_route_that_names_one(demo_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    publish(LocalRepository(root), "iris", 1, demo_model_dir)
    settings = Settings(repository=str(root), cache_dir=str(tmp_path / "cache"))
    with running_app(settings) as client:
        # TF Serving's words (http_rest_api_handler.cc GetInfoMap; classifier.cc, regressor.cc).
        for verb, body, text in (
            (
                "predict",
                {"signature_name": "ghost", "instances": [[5.1, 3.5, 1.4, 0.2]]},
                'Serving signature name: "ghost" not found in signature def',
            ),
            (
                "classify",
                {"signature_name": "ghost", "examples": [{"x": 1.0}]},
                "No signature was found with the name: ghost",
            ),
            (
                "regress",
                {"signature_name": "ghost", "examples": [{"x": 1.0}]},
                "No signature was found with the name: ghost",
            ),
        ):
            answer = client.post(f"/v1/models/iris:{verb}", json=body)
            assert answer.status_code == 400, (verb, answer.text)
            assert answer.json()["error"] == text
            assert str(tmp_path) not in answer.text
