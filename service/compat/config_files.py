"""TF Serving's text-format config files -> rtserve's values.

* ``--model_config_file``: a ``ModelServerConfig`` (the wheel's ``model_server_config_pb2``) -> a ``ModelSet``;
* ``--monitoring_config_file``: a ``MonitoringConfig`` -> the extra Prometheus path on the REST port;
* ``--batching_parameters_file``: ``BatchingParameters`` -> ``BatchingSettings`` fields, and what is ignored;
* ``--ssl_config_file``: an ``SSLConfig`` -> the gRPC TLS fields.

The last three are messages the wheel does not ship (see messages.py). A file that does not parse is refused with
the line TF Serving prints (protobuf's ``Error parsing text-format <message>: <line>:<column>: <what>``); fields
rtserve cannot honour are refused by name rather than ignored.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from service.compat import messages
from service.model_set import ModelSet, parse_model_set

# TF Serving's PrometheusExporter::kPrometheusPath: the path when prometheus_config leaves it empty.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

# ModelConfig.model_type, deprecated in favour of model_platform: TENSORFLOW (1) means "tensorflow".
_MODEL_TYPE_TENSORFLOW = 1


class ConfigFileError(ValueError):
    """A config file that cannot be read, parsed or honoured: one line naming the file and the problem."""


def read_text(path: str | Path, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigFileError(f"--{flag}: cannot read {str(path)!r}: {reason}") from None


def parse_text(text: str, message: Any) -> Any:
    """Parse ``text`` into the empty ``message``; a ParseError becomes TF Serving's (protobuf's) one line."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        # Python's text says "2:12 : what"; protobuf's C++ parser, which TF Serving uses, logs "2:12: what".
        what = str(error)
        line, column = error.GetLine(), error.GetColumn()
        what = what.removeprefix(f"{line}:{column} : ") if line else what
        where = f"{line}:{column}: " if line else ""
        raise ConfigFileError(f"Error parsing text-format {message.DESCRIPTOR.full_name}: {where}{what}") from None
    return message


# ---- ModelServerConfig -> ModelSet


def parse_model_server_config(text: str, source: str = "model config file") -> ModelSet:
    """A text-format ModelServerConfig as rtserve's ModelSet; ConfigFileError when it does not parse or asks for
    what rtserve does not do (custom_model_config, request logging, another platform)."""
    config = parse_text(text, model_server_config_pb2.ModelServerConfig())
    if config.HasField("custom_model_config"):
        raise ConfigFileError(f"{source}: custom_model_config is not supported; rtserve serves a model_config_list")
    document = {
        "config": [_model_document(model, index, source) for index, model in enumerate(config.model_config_list.config)]
    }
    try:
        return parse_model_set(document)
    except ValueError as error:
        raise ConfigFileError(f"{source}: {error}") from None


def read_model_server_config(path: str | Path) -> ModelSet:
    return parse_model_server_config(read_text(path, "model_config_file"), f"--model_config_file {str(path)!r}")


def _model_document(model: Any, index: int, source: str) -> dict[str, Any]:
    where = f"{source}: config[{index}] ({model.name or 'no name'})"
    if model.HasField("logging_config"):
        raise ConfigFileError(f"{where}: logging_config (request logging) is not supported")
    platform = model.model_platform
    if not platform and model.model_type:
        if model.model_type != _MODEL_TYPE_TENSORFLOW:
            raise ConfigFileError(f"{where}: model_type {model.model_type} is not served here (only TENSORFLOW)")
        platform = "tensorflow"
    document: dict[str, Any] = {"name": model.name, "base_path": model.base_path}
    if platform:
        document["model_platform"] = platform
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        # proto3 leaves an unset num_versions at 0; TF Serving's documented default is 1.
        document["model_version_policy"] = {"latest": {"num_versions": policy.latest.num_versions or 1}}
    elif choice == "all":
        document["model_version_policy"] = {"all": {}}
    elif choice == "specific":
        document["model_version_policy"] = {"specific": {"versions": list(policy.specific.versions)}}
    if model.version_labels:
        document["version_labels"] = dict(model.version_labels)
    return document


# ---- MonitoringConfig


@dataclass(frozen=True)
class Monitoring:
    """Whether Prometheus is exported on the REST port, and at which path."""

    enabled: bool
    path: str


def parse_monitoring_config(text: str, source: str = "monitoring config file") -> Monitoring:
    config = parse_text(text, messages.MonitoringConfig())
    prometheus = config.prometheus_config
    path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/"):
        raise ConfigFileError(f"{source}: prometheus_config.path {path!r} must start with '/'")
    return Monitoring(bool(prometheus.enable), path)


# ---- BatchingParameters


@dataclass(frozen=True)
class Batching:
    """BatchingParameters as rtserve's batcher fields (only those the file sets), and the fields it ignores."""

    settings: dict[str, int] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


# Fields of BatchingParameters with no rtserve counterpart: rtserve runs one inference thread per loaded version,
# never pads, and runs a request larger than max_batch_size alone instead of splitting it.
_IGNORED_BATCHING = (
    "num_batch_threads",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
    "pad_variable_length_inputs",
)


def parse_batching_parameters(text: str, source: str = "batching parameters file") -> Batching:
    params = parse_text(text, messages.BatchingParameters())
    found: dict[str, int] = {}
    if params.HasField("max_batch_size"):
        found["max_batch_size"] = _positive(params.max_batch_size.value, "max_batch_size", source)
    if params.HasField("batch_timeout_micros"):
        if params.batch_timeout_micros.value < 0:
            raise ConfigFileError(f"{source}: batch_timeout_micros must not be negative")
        found["batch_timeout_us"] = params.batch_timeout_micros.value
    sizes = list(params.allowed_batch_sizes)
    if sizes:
        # TF Serving's own checks (BatchingSession): increasing, and the last one is the largest batch.
        if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
            raise ConfigFileError(f"{source}: allowed_batch_sizes must be positive and increasing, got {sizes}")
        if found.setdefault("max_batch_size", sizes[-1]) != sizes[-1]:
            raise ConfigFileError(
                f"{source}: the last allowed_batch_sizes entry ({sizes[-1]}) must equal max_batch_size "
                f"({found['max_batch_size']})"
            )
    if params.HasField("max_enqueued_batches"):
        batches = _positive(params.max_enqueued_batches.value, "max_enqueued_batches", source)
        # TF Serving bounds batches of up to max_batch_size rows; rtserve bounds queued requests, each at least
        # one row: the same number of one-row requests fits.
        found["max_queue"] = batches * found.get("max_batch_size", 1)
    ignored = [name for name in _IGNORED_BATCHING if _is_set(params, name)]
    if sizes:
        ignored.append("allowed_batch_sizes (batches are not padded; only the largest size is used)")
    return Batching(found, tuple(ignored))


def _positive(value: int, name: str, source: str) -> int:
    if value < 1:
        raise ConfigFileError(f"{source}: {name} must be at least 1, got {value}")
    return value


def _is_set(message: Any, name: str) -> bool:
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    if descriptor.message_type is not None:
        return bool(message.HasField(name))
    return bool(getattr(message, name))


# ---- SSLConfig


@dataclass(frozen=True)
class Tls:
    """SSLConfig: PEM texts (not file names), as TF Serving's file holds them."""

    server_key: str
    server_cert: str
    custom_ca: str
    client_verify: bool


def parse_ssl_config(text: str, source: str = "ssl config file") -> Tls:
    config = parse_text(text, messages.SSLConfig())
    missing = [name for name in ("server_key", "server_cert") if not getattr(config, name).strip()]
    if missing:
        raise ConfigFileError(f"{source}: {' and '.join(missing)} must hold the PEM text")
    if config.client_verify and not config.custom_ca.strip():
        raise ConfigFileError(f"{source}: client_verify needs custom_ca, the CA that signs client certificates")
    return Tls(config.server_key, config.server_cert, config.custom_ca, bool(config.client_verify))
