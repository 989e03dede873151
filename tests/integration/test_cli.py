"""The `rtserve` command as users run it: push, ls, demo-model and --help, against a folder and against S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import S3Server

RTSERVE = [sys.executable, "-m", "service"]


def rtserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTSERVE, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_help_lists_every_command() -> None:
    result = rtserve("--help")
    assert result.returncode == 0
    for command in ("serve", "push", "ls", "demo-model"):
        assert command in result.stdout
    serve_help = rtserve("serve", "--help").stdout
    assert "RTSERVE_REPOSITORY" in serve_help
    assert "--port" in serve_help
    assert "--grpc-port" in serve_help and "RTSERVE_GRPC_PORT" in serve_help


def test_serve_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import build_parser, settings_from

    monkeypatch.setenv("RTSERVE_GRPC_PORT", "9001")
    assert settings_from(build_parser().parse_args(["serve"])).grpc_port == 9001
    assert settings_from(build_parser().parse_args(["serve", "--grpc-port", "0"])).grpc_port == 0
    assert settings_from(build_parser().parse_args(["serve", "--grpc-port", "9100", "--port", "9200"])).port == 9200


def test_push_and_ls_on_a_folder(demo_model_dir: Path, tmp_path: Path) -> None:
    repository = str(tmp_path / "repo")
    first = rtserve("push", str(demo_model_dir), "--model", "iris", "--repository", repository)
    assert first.returncode == 0, first.stderr
    assert "version 1" in first.stdout
    second = rtserve("push", str(demo_model_dir), "--model", "iris", "--repository", repository)
    assert "version 2" in second.stdout
    listing = rtserve("ls", "--repository", repository)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[4]) for row in rows] == [("iris", "1", "yes"), ("iris", "2", "yes")]
    again = rtserve("push", str(demo_model_dir), "--model", "iris", "--version", "2", "--repository", repository)
    assert again.returncode == 1
    assert again.stderr.startswith("rtserve: error:")
    assert "Traceback" not in again.stderr


def test_push_refuses_bad_names_and_non_savedmodels(demo_model_dir: Path, tmp_path: Path) -> None:
    repository = str(tmp_path / "repo")
    bad_name = rtserve("push", str(demo_model_dir), "--model", "../etc", "--repository", repository)
    assert bad_name.returncode == 1
    assert "Traceback" not in bad_name.stderr
    not_a_model = rtserve("push", str(tmp_path), "--model", "x", "--repository", repository)
    assert not_a_model.returncode == 1
    assert "saved_model" in not_a_model.stderr


def test_push_and_ls_on_s3(s3_server: S3Server, demo_model_dir: Path) -> None:
    bucket = s3_server.create_bucket()
    env = {"RTSERVE_S3__ENDPOINT_URL": s3_server.endpoint_url, "RTSERVE_REPOSITORY": f"s3://{bucket}/models"}
    pushed = rtserve("push", str(demo_model_dir), "--model", "iris", env=env)
    assert pushed.returncode == 0, pushed.stderr
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert "models/iris/1/MANIFEST.json" in keys
    assert "models/iris/1/saved_model.pb" in keys
    listing = rtserve("ls", "--model", "iris", env=env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split()[:2] == ["iris", "1"]


def test_unreachable_s3_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        "RTSERVE_S3__ENDPOINT_URL": "http://127.0.0.1:9",
        "RTSERVE_S3__CONNECT_TIMEOUT_S": "1",
        "RTSERVE_S3__MAX_ATTEMPTS": "1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = rtserve("ls", "--repository", "s3://nowhere", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("rtserve: error:")
    assert "Traceback" not in result.stderr


def test_demo_model_writes_a_servable_version(tmp_path: Path) -> None:
    result = rtserve("demo-model", str(tmp_path / "iris"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "iris" / "1" / "saved_model.pb").is_file()
