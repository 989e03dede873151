"""TF Serving's flags (and the files they name) -> rtserve's ``Settings``.

Precedence, lowest first: rtserve's defaults; TF Serving's defaults where a TF Serving user relies on them (gRPC
on 8500, no REST unless --rest_api_port, 30 s REST timeout), each dropped when its RTSERVE_* variable is set; the
RTSERVE_* environment; the flags given on the command line (and their files). So S3 endpoints, API keys, drift and
the rest of rtserve stay available, and a flag always means what it means to TF Serving.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from service.compat import config_files
from service.compat.flags import ParsedFlags
from service.model_set import ModelSet, parse_model_set
from service.settings import Settings

# TF Serving's server.cc, word for word, so that a search for the message finds the flag.
BATCHING_FILE_WITHOUT_BATCHING = (
    "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
)
THREE_PARALLELISMS = (
    "Either configure server_options.tensorflow_session_parallelism or (server_options.tensorflow_intra_op_"
    "parallelism, server_options.tensorflow_inter_op_parallelism). Cannot configure both."
)
NO_MODEL = "give --model_base_path or --model_config_file (or RTSERVE_MODEL_CONFIG_LIST / RTSERVE_REPOSITORY)"

# --file_system_poll_wait_seconds=0 polls once in TF Serving; rtserve always polls, this rarely.
POLL_ONCE_S = 24 * 3600.0
INT32_MAX = 2**31 - 1


class FlagError(ValueError):
    """Flags that TF Serving would refuse too: the server does not start."""


@dataclass
class Translation:
    settings: Settings
    warnings: list[str] = field(default_factory=list)


def settings_from_flags(parsed: ParsedFlags, environ: Mapping[str, str] | None = None) -> Translation:
    """Settings for the flags given; FlagError or ConfigFileError (both ValueError) for what stops the start."""
    env = {name.upper() for name in (os.environ if environ is None else environ)}
    warnings: list[str] = []
    explicit: dict[str, Any] = {}
    defaults: dict[str, Any] = {}

    def put(target: dict[str, Any], path: str, value: Any) -> None:
        *groups, leaf = path.split(".")
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = value

    def default(path: str, value: Any, *also: str) -> None:
        # Dropped when the environment sets this setting (or one it stands for): env first, flags win.
        names = [_env_name(path), *also]
        if not any(name in env for name in names):
            put(defaults, path, value)

    given = parsed.given
    monitored = False
    # ---- ports
    default("grpc_port", 8500)
    default("rest_enabled", False, "RTSERVE_PORT")
    default("request_timeout_s", 30.0)
    if "port" in given:
        put(explicit, "grpc_port", _port(given["port"], "port"))
    if "rest_api_port" in given:
        rest = _port(given["rest_api_port"], "rest_api_port")
        put(explicit, "rest_enabled", rest != 0)
        if rest:
            put(explicit, "port", rest)
            if rest == parsed.value("port"):
                raise FlagError(f"--rest_api_port={rest} must differ from --port")
    if "grpc_socket_path" in given:
        put(explicit, "grpc.socket_path", given["grpc_socket_path"])
    if "rest_api_timeout_in_ms" in given:
        timeout = _int(given["rest_api_timeout_in_ms"])
        put(explicit, "request_timeout_s", max(timeout, 0) / 1000.0)

    # ---- models
    model_set, watch = _model_set(parsed, env, warnings)
    if model_set is not None:
        put(explicit, "model_config_list", model_set)
    if watch is not None:
        put(explicit, "model_config_file", watch[0])
        put(explicit, "model_config_file_poll_wait_s", watch[1])
    if "file_system_poll_wait_seconds" in given:
        seconds = _int(given["file_system_poll_wait_seconds"])
        if seconds < 0:
            raise FlagError("--file_system_poll_wait_seconds must not be negative here (TF reserves it for tests)")
        if seconds == 0:
            warnings.append(f"--file_system_poll_wait_seconds=0 (poll once): rtserve polls every {POLL_ONCE_S:g} s")
        put(explicit, "poll_interval_s", float(seconds or POLL_ONCE_S))
    if "allow_version_labels_for_unavailable_models" in given:
        put(
            explicit,
            "allow_version_labels_for_unavailable_models",
            given["allow_version_labels_for_unavailable_models"],
        )
    if "num_load_threads" in given and _int(given["num_load_threads"]) > 0:
        put(explicit, "load_workers", _int(given["num_load_threads"]))
    if "max_num_load_retries" in given:
        put(explicit, "max_load_retries", max(0, _int(given["max_num_load_retries"])))
    if "load_retry_interval_micros" in given:
        # TF Serving waits the same interval before every retry.
        interval = max(_int(given["load_retry_interval_micros"]), 1) / 1e6
        put(explicit, "load_retry_initial_s", interval)
        put(explicit, "load_retry_max_s", interval)
    if "enable_model_warmup" in given:
        put(explicit, "model_warmup", given["enable_model_warmup"])

    # ---- batching, threads
    _batching(parsed, explicit, warnings, put)
    _threads(parsed, explicit, put)

    # ---- monitoring, gRPC
    if given.get("monitoring_config_file"):
        path = str(given["monitoring_config_file"])
        monitoring = config_files.parse_monitoring_config(
            config_files.read_text(path, "monitoring_config_file"), f"--monitoring_config_file {path!r}"
        )
        if monitoring.enabled and monitoring.path != "/metrics":
            put(explicit, "prometheus_path", monitoring.path)
        monitored = monitoring.enabled
    if given.get("grpc_channel_arguments"):
        put(explicit, "grpc.channel_arguments", parse_channel_arguments(str(given["grpc_channel_arguments"])))
    if "grpc_max_threads" in given:
        put(explicit, "grpc.max_threads", max(0, _int(given["grpc_max_threads"])))
    if given.get("ssl_config_file"):
        path = str(given["ssl_config_file"])
        tls = config_files.parse_ssl_config(
            config_files.read_text(path, "ssl_config_file"), f"--ssl_config_file {path!r}"
        )
        put(explicit, "grpc.ssl_server_key", tls.server_key)
        put(explicit, "grpc.ssl_server_cert", tls.server_cert)
        put(explicit, "grpc.ssl_custom_ca", tls.custom_ca)
        put(explicit, "grpc.ssl_client_verify", tls.client_verify)
    if "enable_serialization_as_tensor_content" in given:
        put(explicit, "grpc.tensor_content", given["enable_serialization_as_tensor_content"])

    ignored = parsed.ignored_given()
    if ignored:
        warnings.append("accepted but without effect in rtserve: " + ", ".join(f"--{name}" for name in ignored))
    try:
        settings = Settings(**_merge(defaults, explicit))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise FlagError(f"{where}: {first['msg']}") from None
    if monitored and not settings.rest_enabled:
        # TF Serving reads the monitoring config only when it starts its REST server (server.cc).
        warnings.append(
            "--monitoring_config_file has no effect without --rest_api_port: Prometheus is served on the REST port"
        )
    return Translation(settings, warnings)


def parse_channel_arguments(text: str) -> dict[str, int | str]:
    """TF Serving's --grpc_channel_arguments: ``key=value`` pairs split at commas; a value that parses as a 32-bit
    integer is passed as one, any other as a string (server.cc)."""
    arguments: dict[str, int | str] = {}
    for item in text.split(","):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise FlagError(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(value)
        except ValueError:
            arguments[key] = value
            continue
        arguments[key] = number if -INT32_MAX - 1 <= number <= INT32_MAX else value
    return arguments


def _model_set(
    parsed: ParsedFlags, env: set[str], warnings: list[str]
) -> tuple[ModelSet | None, tuple[str, float] | None]:
    given = parsed.given
    config_file = str(given.get("model_config_file", ""))
    if config_file:
        if "model_base_path" in given or "model_name" in given:
            warnings.append("--model_config_file is given: --model_name and --model_base_path are ignored")
        model_set = config_files.read_model_server_config(config_file)
        poll = _int(parsed.value("model_config_file_poll_wait_seconds"))
        return model_set, (config_file, float(max(poll, 0)))
    base_path = str(given.get("model_base_path", ""))
    if base_path:
        document = {"config": [{"name": parsed.value("model_name"), "base_path": base_path}]}
        try:
            return parse_model_set(document), None
        except ValueError as error:
            raise FlagError(f"--model_name/--model_base_path: {error}") from None
    if not env & {"RTSERVE_MODEL_CONFIG_LIST", "RTSERVE_MODEL_CONFIG_FILE", "RTSERVE_REPOSITORY"}:
        raise FlagError(NO_MODEL)
    return None, None


def _batching(parsed: ParsedFlags, explicit: dict[str, Any], warnings: list[str], put: Any) -> None:
    given = parsed.given
    enabled = given.get("enable_batching")
    batching_file = str(given.get("batching_parameters_file", ""))
    if batching_file and enabled is not True:
        raise FlagError(BATCHING_FILE_WITHOUT_BATCHING)
    if enabled is not None:
        put(explicit, "batching.enabled", enabled)
    if batching_file:
        batching = config_files.parse_batching_parameters(
            config_files.read_text(batching_file, "batching_parameters_file"),
            f"--batching_parameters_file {batching_file!r}",
        )
        for name, value in batching.settings.items():
            put(explicit, f"batching.{name}", value)
        if batching.ignored:
            warnings.append("--batching_parameters_file: without effect in rtserve: " + ", ".join(batching.ignored))


def _threads(parsed: ParsedFlags, explicit: dict[str, Any], put: Any) -> None:
    intra = _int(parsed.value("tensorflow_intra_op_parallelism"))
    inter = _int(parsed.value("tensorflow_inter_op_parallelism"))
    session = _int(parsed.value("tensorflow_session_parallelism"))
    if intra > 0 and inter > 0 and session > 0:
        raise FlagError(THREE_PARALLELISMS)
    if intra > 0 or inter > 0:
        # TF Serving sets both from the two flags, 0 meaning TensorFlow's choice (rtserve's: the usable CPUs).
        if "tensorflow_intra_op_parallelism" in parsed.given:
            put(explicit, "tensorflow.intra_op_threads", max(intra, 0))
        if "tensorflow_inter_op_parallelism" in parsed.given:
            put(explicit, "tensorflow.inter_op_threads", max(inter, 0))
    elif session > 0:
        put(explicit, "tensorflow.intra_op_threads", session)
        put(explicit, "tensorflow.inter_op_threads", session)


def _port(value: object, name: str) -> int:
    port = _int(value)
    if not 0 <= port <= 65535:
        raise FlagError(f"--{name}={port} is not a port (0 to 65535)")
    return port


def _int(value: object) -> int:
    assert isinstance(value, int) and not isinstance(value, bool)
    return value


def _env_name(path: str) -> str:
    return "RTSERVE_" + "__".join(part.upper() for part in path.split("."))


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
