"""TF Serving's command line (tensorflow_model_server): TF's flag syntax, every mapped flag onto Settings, the
accept-and-warn flags, unknown arguments, and the flag combinations TF Serving refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.compat import main as compat_main
from service.compat.flags import BY_NAME, parse_flags, usage
from service.compat.translate import (
    BATCHING_FILE_WITHOUT_BATCHING,
    THREE_PARALLELISMS,
    FlagError,
    parse_channel_arguments,
    settings_from_flags,
)
from service.settings import Settings

MODEL = ["--model_name=m", "--model_base_path=/models/m"]


@pytest.fixture(autouse=True)
def _no_rtserve_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("RTSERVE_"):
            monkeypatch.delenv(name)


def settings(*argv: str) -> Settings:
    return settings_from_flags(parse_flags([*MODEL, *argv])).settings


def value(model: Any, path: str) -> Any:
    for part in path.split("."):
        model = getattr(model, part)
    return model


# ---- syntax


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--enable_batching", True),
        ("--enable_batching=true", True),
        ("--enable_batching=TRUE", True),
        ("--enable_batching=1", True),
        ("--enable_batching=false", False),
        ("--enable_batching=False", False),
        ("--enable_batching=0", False),
    ],
)
def test_bool_flags_bare_or_true_false(arg: str, expected: bool) -> None:
    assert parse_flags([arg]).given == {"enable_batching": expected}


def test_a_bool_with_another_value_is_an_error() -> None:
    parsed = parse_flags(["--enable_batching=yes"])
    assert parsed.errors == ["Couldn't interpret value yes for flag enable_batching."]


@pytest.mark.parametrize(
    ("args", "given", "unknown"),
    [
        (["--port=8500"], {"port": 8500}, []),
        (["--port=-1"], {"port": -1}, []),
        (["--port", "8500"], {}, ["--port", "8500"]),  # non-bool flags take =value only: both words left over
        (["-port=8500"], {}, ["-port=8500"]),
        (["--portx=1"], {}, ["--portx=1"]),
        (["--model_name=a=b"], {"model_name": "a=b"}, []),
        (["--model_name="], {"model_name": ""}, []),
        (["--", "--port=1"], {}, ["--", "--port=1"]),
        (["serve"], {}, ["serve"]),
    ],
)
def test_value_flags_need_equals(args: list[str], given: dict[str, Any], unknown: list[str]) -> None:
    parsed = parse_flags(args)
    assert (parsed.given, parsed.unknown, parsed.errors) == (given, unknown, [])


@pytest.mark.parametrize("text", ["abc", "85x", "1_000", "", "2147483648", "1.5"])
def test_an_int_that_does_not_convert_is_an_error(text: str) -> None:
    assert parse_flags([f"--port={text}"]).errors == [f"Couldn't interpret value {text} for flag port."]


def test_int64_and_float_flags() -> None:
    parsed = parse_flags(["--load_retry_interval_micros=5000000000", "--per_process_gpu_memory_fraction=0.5"])
    assert parsed.given == {"load_retry_interval_micros": 5_000_000_000, "per_process_gpu_memory_fraction": 0.5}


def test_help_lists_every_flag_with_its_default() -> None:
    text = usage()
    for name, flag in BY_NAME.items():
        assert f"--{name}" in text
        assert flag.help in text
    assert "--port=int32\tdefault: 8500" in text


# ---- mapping


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        (["--port=9000"], "grpc_port", 9000),
        (["--port=0"], "grpc_port", 0),
        (["--rest_api_port=8501"], "port", 8501),
        (["--rest_api_port=8501"], "rest_enabled", True),
        (["--rest_api_port=0"], "rest_enabled", False),
        (["--grpc_socket_path=/tmp/tfs.sock"], "grpc.socket_path", "/tmp/tfs.sock"),
        (["--rest_api_timeout_in_ms=60000"], "request_timeout_s", 60.0),
        (["--file_system_poll_wait_seconds=7"], "poll_interval_s", 7.0),
        (["--file_system_poll_wait_seconds=0"], "poll_interval_s", 86400.0),
        (["--allow_version_labels_for_unavailable_models"], "allow_version_labels_for_unavailable_models", True),
        (["--enable_model_warmup=false"], "model_warmup", False),
        (["--max_num_load_retries=3"], "max_load_retries", 3),
        (["--load_retry_interval_micros=2500000"], "load_retry_initial_s", 2.5),
        (["--load_retry_interval_micros=2500000"], "load_retry_max_s", 2.5),
        (["--num_load_threads=4"], "load_workers", 4),
        (["--enable_batching=false"], "batching.enabled", False),
        (["--enable_batching"], "batching.enabled", True),
        (["--tensorflow_intra_op_parallelism=3"], "tensorflow.intra_op_threads", 3),
        (["--tensorflow_inter_op_parallelism=2"], "tensorflow.inter_op_threads", 2),
        (["--tensorflow_session_parallelism=5"], "tensorflow.intra_op_threads", 5),
        (["--tensorflow_session_parallelism=5"], "tensorflow.inter_op_threads", 5),
        (
            ["--tensorflow_session_parallelism=5", "--tensorflow_intra_op_parallelism=2"],
            "tensorflow.inter_op_threads",
            0,
        ),
        (
            ["--grpc_channel_arguments=grpc.max_concurrent_streams=100,grpc.primary_user_agent=x"],
            "grpc.channel_arguments",
            {"grpc.max_concurrent_streams": 100, "grpc.primary_user_agent": "x"},
        ),
        (["--grpc_max_threads=8"], "grpc.max_threads", 8),
        (["--enable_serialization_as_tensor_content"], "grpc.tensor_content", True),
    ],
)
def test_each_flag_sets_its_setting(args: list[str], path: str, expected: Any) -> None:
    assert value(settings(*args), path) == expected


def test_tf_servings_defaults_where_its_users_rely_on_them() -> None:
    chosen = settings()
    assert chosen.grpc_port == 8500
    assert chosen.rest_enabled is False, "no REST unless --rest_api_port"
    assert chosen.request_timeout_s == 30.0
    assert chosen.batching.enabled is True, "rtserve's adaptive batcher stays on unless --enable_batching=false"


def test_one_model_from_name_and_base_path() -> None:
    (model,) = settings_from_flags(
        parse_flags(["--model_name=iris", "--model_base_path=s3://bucket/iris"])
    ).settings.model_config_list.config  # type: ignore[union-attr]
    assert (model.name, model.base_path) == ("iris", "s3://bucket/iris")
    (default,) = settings_from_flags(parse_flags(["--model_base_path=/m"])).settings.model_config_list.config  # type: ignore[union-attr]
    assert default.name == "default", "TF Serving's default --model_name"


def test_model_config_file_wins_over_name_and_base_path(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'b' base_path: '/b' } }")
    translation = settings_from_flags(
        parse_flags([*MODEL, f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=60"])
    )
    chosen = translation.settings
    assert [m.name for m in chosen.model_config_list.config] == ["a", "b"]  # type: ignore[union-attr]
    assert (chosen.model_config_file, chosen.model_config_file_poll_wait_s) == (str(config), 60.0)
    assert any("--model_name and --model_base_path are ignored" in w for w in translation.warnings)


def test_monitoring_batching_and_ssl_files(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 500 } max_enqueued_batches { value: 4 } "
        "num_batch_threads { value: 2 }"
    )
    ssl = tmp_path / "ssl.config"
    ssl.write_text('server_key: "KEY" server_cert: "CERT"')
    translation = settings_from_flags(
        parse_flags(
            [
                *MODEL,
                f"--monitoring_config_file={monitoring}",
                "--enable_batching",
                f"--batching_parameters_file={batching}",
                f"--ssl_config_file={ssl}",
            ]
        )
    )
    chosen = translation.settings
    assert chosen.prometheus_path == "/monitoring/prometheus/metrics"
    assert (chosen.batching.max_batch_size, chosen.batching.batch_timeout_us, chosen.batching.max_queue) == (
        64,
        500,
        256,
    )
    assert (chosen.grpc.ssl_server_key, chosen.grpc.ssl_server_cert, chosen.grpc.ssl_client_verify) == (
        "KEY",
        "CERT",
        False,
    )
    assert any("num_batch_threads" in w for w in translation.warnings)


def test_prometheus_disabled_adds_no_path(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: false }")
    assert settings(f"--monitoring_config_file={monitoring}").prometheus_path == ""


def test_monitoring_without_rest_is_warned_about_as_tf_serving_ignores_it(tmp_path: Path) -> None:
    # TF Serving reads --monitoring_config_file only when it starts its REST server: gRPC alone exports nothing.
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    alone = settings_from_flags(parse_flags([*MODEL, f"--monitoring_config_file={monitoring}"]))
    assert not alone.settings.rest_enabled
    assert any("--monitoring_config_file has no effect without --rest_api_port" in w for w in alone.warnings)
    with_rest = settings_from_flags(
        parse_flags([*MODEL, "--rest_api_port=8501", f"--monitoring_config_file={monitoring}"])
    )
    assert not any("monitoring" in w for w in with_rest.warnings)


def test_flags_that_make_no_sense_here_are_named_in_one_warning() -> None:
    translation = settings_from_flags(
        parse_flags(
            [
                *MODEL,
                "--per_process_gpu_memory_fraction=0.5",
                "--prefer_tflite_model",
                "--enable_profiler=false",
                "--xla_cpu_compilation_enabled=true",
                "--skip_initialize_tpu",
            ]
        )
    )
    (warning,) = [w for w in translation.warnings if w.startswith("accepted but without effect")]
    for name in (
        "per_process_gpu_memory_fraction",
        "prefer_tflite_model",
        "enable_profiler",
        "xla_cpu_compilation_enabled",
        "skip_initialize_tpu",
    ):
        assert f"--{name}" in warning


# ---- environment first, flags win


def test_rtserve_settings_apply_where_no_flag_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_S3__ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("RTSERVE_GRPC_PORT", "9000")
    monkeypatch.setenv("RTSERVE_PORT", "8080")
    monkeypatch.setenv("RTSERVE_REQUEST_TIMEOUT_S", "5")
    chosen = settings()
    assert chosen.s3.endpoint_url == "http://minio:9000"
    assert (chosen.grpc_port, chosen.port, chosen.rest_enabled, chosen.request_timeout_s) == (9000, 8080, True, 5.0)
    flagged = settings("--port=8500", "--rest_api_port=8501", "--rest_api_timeout_in_ms=1000")
    assert (flagged.grpc_port, flagged.port, flagged.request_timeout_s) == (8500, 8501, 1.0)


def test_without_a_model_flag_the_environment_may_name_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FlagError, match="--model_base_path or --model_config_file"):
        settings_from_flags(parse_flags(["--port=8500"]))
    monkeypatch.setenv("RTSERVE_REPOSITORY", "/models")
    assert settings_from_flags(parse_flags(["--port=8500"])).settings.repository == "/models"


# ---- refused combinations


def test_setting_all_three_parallelisms_is_an_error() -> None:
    with pytest.raises(FlagError) as error:
        settings(
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
            "--tensorflow_session_parallelism=1",
        )
    assert str(error.value) == THREE_PARALLELISMS


def test_a_batching_file_without_enable_batching_is_an_error(tmp_path: Path) -> None:
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }")
    for extra in ([], ["--enable_batching=false"]):
        with pytest.raises(FlagError) as error:
            settings(f"--batching_parameters_file={batching}", *extra)
        assert str(error.value) == BATCHING_FILE_WITHOUT_BATCHING


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rest_api_port=8500"], "must differ from --port"),
        (["--port=70000"], "is not a port"),
        (["--file_system_poll_wait_seconds=-1"], "must not be negative"),
        (["--grpc_channel_arguments=novalue"], "is not key=value"),
    ],
)
def test_refused_values(args: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        settings(*args)


def test_channel_arguments_are_ints_when_they_parse() -> None:
    assert parse_channel_arguments("a=1,b=-2,c=x,d=99999999999,,e=") == {
        "a": 1,
        "b": -2,
        "c": "x",
        "d": "99999999999",
        "e": "",
    }


# ---- the command, up to the point where it would serve


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat_main.main(["--help"]) == 0
    assert "--model_config_file_poll_wait_seconds=int32" in capsys.readouterr().out


def test_main_refuses_a_value_that_does_not_convert(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat_main.main(["--port=abc", *MODEL]) == 255
    captured = capsys.readouterr()
    assert "Couldn't interpret value abc for flag port." in captured.err
    assert "usage: tensorflow_model_server" in captured.out


def test_main_stops_on_a_broken_model_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n  config { nme: 'a' }\n}\n")
    assert compat_main.main([f"--model_config_file={config}"]) == 1
    assert capsys.readouterr().err.startswith(
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:12: Message type "
        '"tensorflow.serving.ModelConfig"'
    )


def test_main_stops_on_three_parallelisms(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        "--tensorflow_session_parallelism=1",
    ]
    assert compat_main.main([*MODEL, *args]) == 1
    assert THREE_PARALLELISMS in capsys.readouterr().err


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat_main.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("TensorFlow ModelServer: rtserve-")


@pytest.mark.parametrize(
    ("argv", "grpc", "rest", "timeout", "name", "base"),
    [
        # KServe's kserve-tensorflow-serving ClusterServingRuntime (its placeholders filled in)
        (
            [
                "--model_name=flowers",
                "--port=9000",
                "--rest_api_port=8080",
                "--model_base_path=/mnt/models",
                "--rest_api_timeout_in_ms=60000",
            ],
            9000,
            8080,
            60.0,
            "flowers",
            "/mnt/models",
        ),
        # TF Serving's image entrypoint (tf_serving_entrypoint.sh) with its default environment
        (
            ["--port=8500", "--rest_api_port=8501", "--model_name=model", "--model_base_path=/models/model"],
            8500,
            8501,
            30.0,
            "model",
            "/models/model",
        ),
    ],
)
def test_command_lines_as_kserve_and_tf_servings_image_write_them(
    argv: list[str], grpc: int, rest: int, timeout: float, name: str, base: str
) -> None:
    translation = settings_from_flags(parse_flags(argv))
    chosen = translation.settings
    assert (chosen.grpc_port, chosen.port, chosen.rest_enabled, chosen.request_timeout_s) == (grpc, rest, True, timeout)
    (model,) = chosen.model_config_list.config  # type: ignore[union-attr]
    assert (model.name, model.base_path) == (name, base)
    assert translation.warnings == []


def test_the_package_installs_the_command() -> None:
    import importlib
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    target = pyproject["project"]["scripts"]["tensorflow_model_server"]
    module, _, function = target.partition(":")
    assert getattr(importlib.import_module(module), function) is compat_main.main
    assert "compat/protos/*" in pyproject["tool"]["setuptools"]["package-data"]["service"]
