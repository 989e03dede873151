"""TF Serving's command-line flags: their names, types, defaults and help, and TF's syntax for them.

The syntax is tensorflow/core/util/command_line_flags.cc's: a non-bool flag only as ``--name=value``; a bool as
``--name``, ``--name=true|false`` (or ``1|0``, any case). An argument that matches no flag is left over (TF Serving
prints ``unknown argument: <the first one>`` and the usage, and starts anyway); a known flag with a value that does
not convert is an error (``Couldn't interpret value <v> for flag <name>.``) and the server does not start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["bool", "int32", "int64", "float", "string"]
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"\s*[+-]?[0-9]+")


@dataclass(frozen=True)
class Flag:
    name: str
    kind: Kind
    default: bool | int | float | str
    help: str
    # Accepted and named in one warning: the flag has no meaning in rtserve.
    ignored: bool = False


def _f(name: str, kind: Kind, default: bool | int | float | str, help: str, ignored: bool = False) -> Flag:
    return Flag(name, kind, default, help, ignored)


# TF Serving's flags (model_servers/main.cc), in its order, with its help text shortened. "(rtserve: ...)" says
# what differs; ignored ones are accepted and warned about.
FLAGS: tuple[Flag, ...] = (
    _f("port", "int32", 8500, "TCP port for the gRPC API; 0 disables it"),
    _f("grpc_socket_path", "string", "", "also listen for the gRPC API on this UNIX socket"),
    _f("rest_api_port", "int32", 0, "port for the HTTP/REST API; 0 disables it; must differ from --port"),
    _f("rest_api_num_threads", "int32", 0, "HTTP/REST threads (rtserve: one event loop; ignored)", True),
    _f("rest_api_timeout_in_ms", "int32", 30000, "timeout of HTTP/REST API calls (rtserve: of every inference call)"),
    _f("rest_api_enable_cors_support", "bool", False, "CORS headers on HTTP responses (rtserve: ignored)", True),
    _f("enable_batching", "bool", False, "batch requests (rtserve: its adaptive batcher is on unless set false)"),
    _f(
        "allow_version_labels_for_unavailable_models",
        "bool",
        False,
        "let a new label name a version that is not loaded yet",
    ),
    _f("batching_parameters_file", "string", "", "BatchingParameters text proto; needs --enable_batching"),
    _f("enable_per_model_batching_parameters", "bool", False, "per-model batching files (rtserve: ignored)", True),
    _f("model_config_file", "string", "", "ModelServerConfig text proto; overrides --model_name/--model_base_path"),
    _f(
        "model_config_file_poll_wait_seconds",
        "int32",
        0,
        "seconds between re-reads of --model_config_file, applied as the new model set; 0 reads it once",
    ),
    _f("model_name", "string", "default", "name of the one model (without --model_config_file)"),
    _f("model_base_path", "string", "", "folder or s3:// prefix holding the one model's version folders"),
    _f("num_load_threads", "int32", 0, "model versions loading at once; 0: rtserve's RTSERVE_LOAD_WORKERS"),
    _f("num_unload_threads", "int32", 0, "unload threads (rtserve: ignored)", True),
    _f("max_num_load_retries", "int32", 5, "retries of a failed load (rtserve: for ever unless given)"),
    _f("load_retry_interval_micros", "int64", 60_000_000, "wait between load retries (rtserve: back-off unless given)"),
    _f(
        "file_system_poll_wait_seconds",
        "int32",
        1,
        "seconds between polls for new versions (rtserve: RTSERVE_POLL_INTERVAL_S unless given)",
    ),
    _f("flush_filesystem_caches", "bool", True, "flush file system caches after loads (rtserve: ignored)", True),
    _f("tensorflow_session_parallelism", "int64", 0, "threads of a session when intra/inter are not set; 0 auto"),
    _f("tensorflow_session_config_file", "string", "", "SessionConfig text proto (rtserve: ignored)", True),
    _f("tensorflow_intra_op_parallelism", "int64", 0, "threads inside one op; 0 auto"),
    _f("tensorflow_inter_op_parallelism", "int64", 0, "ops run in parallel; 0 auto"),
    _f("use_alts_credentials", "bool", False, "ALTS credentials (rtserve: ignored)", True),
    _f("ssl_config_file", "string", "", "SSLConfig text proto: TLS on the gRPC port"),
    _f("platform_config_file", "string", "", "platform config (rtserve: ignored)", True),
    _f("per_process_gpu_memory_fraction", "float", 0.0, "GPU memory share (rtserve: CPU only; ignored)", True),
    _f("saved_model_tags", "string", "serve", "MetaGraphDef tags to load (rtserve: always 'serve'; ignored)", True),
    _f("grpc_channel_arguments", "string", "", "comma list of key=value gRPC channel arguments"),
    _f("grpc_max_threads", "int32", 0, "gRPC handler threads (rtserve: handlers run on the event loop)"),
    _f("enable_model_warmup", "bool", True, "warm versions up before they serve"),
    _f("num_request_iterations_for_warmup", "int32", 1, "warm-up replays (rtserve: ignored)", True),
    _f("version", "bool", False, "print the version and exit"),
    _f("monitoring_config_file", "string", "", "MonitoringConfig text proto: Prometheus on the REST port"),
    _f("remove_unused_fields_from_bundle_metagraph", "bool", True, "(rtserve: ignored)", True),
    _f("prefer_tflite_model", "bool", False, "TF Lite (rtserve: ignored)", True),
    _f("num_tflite_pools", "int32", 1, "TF Lite (rtserve: ignored)", True),
    _f("num_tflite_interpreters_per_pool", "int32", 1, "TF Lite (rtserve: ignored)", True),
    _f("enable_signature_method_name_check", "bool", False, "(rtserve: ignored)", True),
    _f("xla_cpu_compilation_enabled", "bool", False, "XLA (rtserve: ignored)", True),
    _f("enable_profiler", "bool", True, "TensorFlow profiler service (rtserve: ignored)", True),
    _f("thread_pool_factory_config_file", "string", "", "(rtserve: ignored)", True),
    _f("mixed_precision", "string", "", "(rtserve: ignored)", True),
    _f("skip_initialize_tpu", "bool", False, "TPU (rtserve: ignored)", True),
    _f("use_tflite_model", "bool", False, "TF Lite (rtserve: ignored)", True),
    _f("enable_grpc_healthcheck_service", "bool", False, "grpc.health.v1 (rtserve: always on, tied to readiness)"),
    _f("enable_serialization_as_tensor_content", "bool", False, "answer tensors in tensor_content bytes"),
)
BY_NAME = {flag.name: flag for flag in FLAGS}

FlagValue = bool | int | float | str


@dataclass
class ParsedFlags:
    """The flags given (name -> value), what matched no flag, and the values that did not convert."""

    given: dict[str, FlagValue] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    help: bool = False

    def value(self, name: str) -> FlagValue:
        """The given value, else TF Serving's default."""
        return self.given.get(name, BY_NAME[name].default)

    def ignored_given(self) -> list[str]:
        return [name for name in self.given if BY_NAME[name].ignored]


def parse_flags(argv: list[str]) -> ParsedFlags:
    parsed = ParsedFlags()
    for index, arg in enumerate(argv):
        if arg == "--":  # TF passes everything after it through as left over
            parsed.unknown.extend(argv[index:])
            break
        if arg == "--help":
            parsed.help = True
            continue
        match = _match(arg)
        if match is None:
            parsed.unknown.append(arg)
            continue
        flag, text = match
        value = _convert(flag, text)
        if value is None:
            parsed.errors.append(f"Couldn't interpret value {text} for flag {flag.name}.")
        else:
            parsed.given[flag.name] = value
    return parsed


def _match(arg: str) -> tuple[Flag, str | None] | None:
    """The flag ``arg`` sets and its value text (None: a bare bool), or None when it sets none."""
    if not arg.startswith("--"):
        return None
    name, equals, text = arg[2:].partition("=")
    flag = BY_NAME.get(name)
    if flag is None:
        return None
    if not equals:
        # Only a bool may stand alone; "--port 8500" leaves both words over, as TF does.
        return (flag, None) if flag.kind == "bool" else None
    return flag, text


def _convert(flag: Flag, text: str | None) -> FlagValue | None:
    if flag.kind == "bool":
        if text is None or text.lower() == "true" or text == "1":
            return True
        if text.lower() == "false" or text == "0":
            return False
        return None
    assert text is not None
    if flag.kind == "string":
        return text
    if flag.kind == "float":
        try:
            return float(text)
        except ValueError:
            return None
    if not _INTEGER.fullmatch(text):  # sscanf("%d%c") == 1: leading blanks and a sign, nothing after
        return None
    number = int(text)
    low, high = INT32 if flag.kind == "int32" else INT64
    return number if low <= number <= high else None


def usage(program: str = "tensorflow_model_server") -> str:
    lines = [
        "usage: " + program,
        "Flags (TF Serving's; rtserve's RTSERVE_* settings apply where no flag says otherwise):",
    ]
    for flag in FLAGS:
        default = str(flag.default).lower() if flag.kind == "bool" else repr(flag.default)
        value = "" if flag.kind == "bool" else f"={flag.kind}"
        lines.append(f"\t--{flag.name}{value}\tdefault: {default}\t{flag.help}")
    return "\n".join(lines) + "\n"
