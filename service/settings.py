"""Configuration: one pydantic-settings tree, environment prefix ``RTSERVE_``, nested delimiter ``__``.

Built once in ``main()`` (or by a test) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.model_set import ModelSet
from service.policy import VersionPolicy, parse_version_policy


class S3Settings(BaseModel):
    """How to reach an S3-compatible store. Credentials come from the standard AWS variables or files."""

    endpoint_url: str | None = Field(None, description="S3 endpoint, e.g. http://minio:9000; AWS when unset")
    region: str | None = Field(None, description="Region name; AWS_REGION/AWS_DEFAULT_REGION when unset")
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path", description="Bucket addressing; path-style works with MinIO and most S3-compatible servers"
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect timeout per S3 call")
    read_timeout_s: float = Field(30.0, gt=0, description="Read timeout per S3 call")
    max_attempts: int = Field(3, ge=1, description="botocore retry attempts per S3 call")


class TensorFlowSettings(BaseModel):
    """TensorFlow thread pools; 0 means the CPUs this process may use (its affinity / cgroup quota)."""

    intra_op_threads: int = Field(0, ge=0, description="Threads inside one op (matrix multiply, ...)")
    inter_op_threads: int = Field(0, ge=0, description="Ops run in parallel")


# Whether requests of a signature may share model calls: "auto" when a check at load shows that each row is
# answered the same batched as alone (service/batch_safety.py), "on" always (shapes permitting), "off" never.
MergeChoice = Literal["auto", "on", "off"]


class BatchingOverride(BaseModel):
    """One model's departures from the server's batching defaults; unset fields keep the default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    max_batch_size: int | None = Field(None, ge=1)
    batch_timeout_us: int | None = Field(None, ge=0)
    max_queue: int | None = Field(None, ge=1)
    merge: MergeChoice | None = None
    signatures: dict[str, MergeChoice] | None = None


class BatchingSettings(BaseModel):
    """Adaptive batching per loaded model version (one inference thread each). Starting points, to be tuned by
    the benchmark in bench/."""

    enabled: bool = Field(
        True, description="Coalesce concurrent requests; when false every request is a model call of its own"
    )
    max_batch_size: int = Field(
        256, ge=1, description="Most rows (first-dimension entries) in one model call; larger requests run alone"
    )
    batch_timeout_us: int = Field(
        1000,
        ge=0,
        description="Longest time the oldest queued request waits for company. No wait when the queue holds a "
        "full batch, for a lone request on a version idle for longer than this, or right after a wait that drew "
        "no company; 0 never waits (batches are then what queued while the model was busy)",
    )
    max_queue: int = Field(
        256, ge=1, description="Requests queued per model version; beyond it requests get 503 with Retry-After"
    )
    retry_after_s: int = Field(1, ge=1, description="The Retry-After header (seconds) sent with a queue-full 503")
    overrides: dict[str, BatchingOverride] = Field(
        default_factory=dict,
        description='Per-model overrides as JSON, e.g. {"iris": {"max_batch_size": 64, "batch_timeout_us": 500}}',
    )
    merge: MergeChoice = Field(
        "auto",
        description="Whether requests of a signature share model calls: auto, only when a check at load shows "
        "that every row is answered the same batched as alone; on, whenever the shapes allow (no check); off, never "
        "(each request is a model call of its own, still queued)",
    )
    signatures: dict[str, MergeChoice] = Field(
        default_factory=dict,
        description='The merge choice per signature name, as JSON, e.g. {"rank": "off"}; set it per model in '
        'overrides: {"m": {"signatures": {"serving_default": "on"}}}',
    )

    def for_model(self, model: str) -> BatchingSettings:
        """The settings one model's versions batch with: the defaults, then that model's override."""
        override = self.overrides.get(model)
        changes = override.model_dump(exclude_none=True) if override else {}
        if "signatures" in changes:  # per-signature choices add to the server's, they do not replace them
            changes["signatures"] = {**self.signatures, **changes["signatures"]}
        return self.model_copy(update={**changes, "overrides": {}})

    def merge_choice(self, signature: str) -> MergeChoice:
        """auto, on or off for one signature: its own choice, else the model's (or the server's) default."""
        return self.signatures.get(signature, self.merge)

    def warm_up_sizes(self) -> tuple[int, ...]:
        """Batch sizes a version runs before it serves: powers of two up to max_batch_size, and that size."""
        if not self.enabled:
            return (1,)
        sizes = {self.max_batch_size}
        size = 1
        while size < self.max_batch_size:
            sizes.add(size)
            size *= 2
        return tuple(sorted(sizes))


class AuthSettings(BaseModel):
    """Optional API-key authentication for every route; off unless ``keys_file`` is set."""

    keys_file: str | None = Field(
        None,
        description="File of accepted API keys, one per line ('#' comments and blank lines ignored), e.g. a "
        "mounted Secret; re-read within a second of a change. Unset: no authentication",
    )
    exempt_health: bool = Field(True, description="Let /v2/health/live and /v2/health/ready answer without a key")
    exempt_metrics: bool = Field(True, description="Let /metrics answer without a key")


class DriftSettings(BaseModel):
    """Drift monitoring of versions that carry a reference profile (``rtserve push --profile``)."""

    enabled: bool = Field(True, description="Compare live inputs with the reference profile of each version")
    window_size: int = Field(
        2000, ge=10, description="Rows in the sliding window of live inputs (give or take a tenth)"
    )
    min_samples: int = Field(
        200, ge=1, description="Rows the window needs before rtserve_drift_psi is exported for a version"
    )
    max_features: int = Field(
        64, ge=1, description="Most profiled features monitored per version (each is a metric series)"
    )


class OtelSettings(BaseModel):
    """Optional OpenTelemetry traces, exported over OTLP/HTTP; off by default."""

    enabled: bool = Field(False, description="Export a trace per inference request (queue wait and inference spans)")
    endpoint: str = Field(
        "http://localhost:4318/v1/traces", description="OTLP/HTTP traces endpoint, e.g. of an OpenTelemetry Collector"
    )
    service_name: str = Field("rtserve", description="The service.name resource attribute of the spans")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of requests traced when the caller sent no sampled traceparent"
    )


class GrpcSettings(BaseModel):
    """The gRPC server's bounds and behaviour (the port itself is RTSERVE_GRPC_PORT)."""

    socket_path: str = Field(
        "", description="Also listen on this unix socket (TF Serving's --grpc_socket_path); empty: no socket"
    )
    max_concurrent_rpcs: int = Field(
        1024,
        ge=1,
        description="RPCs handled at once; beyond it a call is refused at once with RESOURCE_EXHAUSTED, as REST "
        "answers 503",
    )
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Close (GOAWAY) each client connection after about this long (gRPC adds +-10% jitter) so that "
        "long-lived HTTP/2 connections rebalance across pods behind a Service; 0: never. The grace for its "
        "calls in flight is RTSERVE_DRAIN_TIMEOUT_S",
    )
    keepalive_min_ping_interval_s: float = Field(
        10.0,
        gt=0,
        description="Client keepalive pings closer together than this are strikes; the ping after two strikes "
        "closes the connection (ENHANCE_YOUR_CALM)",
    )
    tensor_content: bool = Field(
        False,
        description="Answer TF Serving gRPC tensors in tensor_content bytes instead of the typed *_val fields "
        "(TF Serving's --enable_serialization_as_tensor_content)",
    )
    auth_exempt_health: bool = Field(
        True, description="Health checks and server reflection need no API key (as the REST health paths)"
    )
    stream_window: int = Field(
        16,
        ge=1,
        le=1024,
        description="Requests of one ModelStreamInfer stream in work at once; the stream is not read further until "
        "the oldest is answered, so a client cannot queue unbounded work on one stream",
    )
    channel_arguments: dict[str, int | str] = Field(
        default_factory=dict,
        description='Extra gRPC server channel arguments as JSON, e.g. {"grpc.max_concurrent_streams": 100}, '
        "applied after rtserve's own options (TF Serving's --grpc_channel_arguments)",
    )
    max_threads: int = Field(
        0,
        ge=0,
        description="Threads for gRPC handlers that are not coroutines (TF Serving's --grpc_max_threads); rtserve's "
        "handlers run on the event loop, so this bounds only the executor grpc.aio keeps; 0: grpc's default",
    )
    ssl_server_key: str = Field(
        "", description="TLS on gRPC: the server's private key, PEM text (TF Serving's SSLConfig server_key)"
    )
    ssl_server_cert: str = Field("", description="TLS on gRPC: the server's certificate chain, PEM text")
    ssl_custom_ca: str = Field("", description="TLS on gRPC: the CA certificates that sign client certificates, PEM")
    ssl_client_verify: bool = Field(
        False, description="TLS on gRPC: require a client certificate signed by RTSERVE_GRPC__SSL_CUSTOM_CA"
    )


def usable_cpus() -> int:
    """CPUs this process may use: the scheduler affinity, capped by a cgroup v2 CPU quota when one is set."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Settings(BaseSettings):
    """Every knob of rtserve. Environment: ``RTSERVE_<FIELD>``; nested: ``RTSERVE_S3__ENDPOINT_URL``."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_", env_nested_delimiter="__", extra="ignore")

    repository: str = Field("./models", description="Model repository: a folder or s3://bucket/prefix")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Models to serve, comma separated; '*' serves every model in the repository",
    )
    version_policy: str = Field("latest:1", description="Default version policy: 'latest:N', 'all' or 'specific:1,2'")
    version_policies: dict[str, str] = Field(
        default_factory=dict, description='Per-model version policy as JSON, e.g. {"iris": "all"}'
    )
    cache_dir: str = Field("./.rtserve-cache", description="Where downloaded versions are kept")

    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port for both protocols, health and metrics")
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="gRPC port for TF Serving's PredictionService/ModelService and the Open Inference Protocol's "
        "GRPCInferenceService, with health and reflection; 0 turns gRPC off",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines as JSON objects (one per line) or as plain text"
    )
    log_requests: bool = Field(True, description="Log one line per inference request")
    log_payload_sample_rate: float = Field(
        0.0, ge=0, le=1, description="Share of request log lines that include the request body; 0 never"
    )
    log_payload_max_bytes: int = Field(4096, ge=1, description="Longest request body a log line includes")

    poll_interval_s: float = Field(5.0, gt=0, description="Seconds between repository polls")
    poll_jitter: float = Field(0.1, ge=0, le=1, description="Poll interval jitter as a fraction")
    poll_max_backoff_s: float = Field(120.0, gt=0, description="Longest wait between polls after errors")
    load_retry_initial_s: float = Field(5.0, gt=0, description="First wait before retrying a failed load")
    load_retry_max_s: float = Field(300.0, gt=0, description="Longest wait before retrying a failed load")

    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take before the process exits"
    )
    shutdown_delay_s: float = Field(
        0.0, ge=0, description="On SIGTERM, seconds to stay up answering not-ready before draining"
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body accepted")
    body_timeout_s: float = Field(
        60.0, gt=0, description="Longest time to receive a whole request body; a client that stalls gets 408"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time for a request's headers, from the connection opening or the request's first "
        "byte; past it the connection is closed",
    )
    max_tensor_elements: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest number of elements in one request tensor"
    )

    request_timeout_s: float = Field(
        0.0,
        ge=0,
        description="Longest time an inference request may take from its arrival (504 past it); a client's "
        "X-Request-Timeout-Ms header or V2 timeout parameter may shorten it, never extend it; 0 means none",
    )
    allowed_file_ops: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Ops that model screening refuses (outside its allowed op families, or reaching files, "
        "processes or the network) but this server allows for every model, comma separated, e.g. "
        "InitializeTableFromTextFileV2",
    )

    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request line plus headers (and, of a chunked body, its trailers and chunk "
        "extensions); past it 431 and the connection is closed",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time writing an answer may make no progress (a client that does not read it); past "
        "it the connection is dropped and the answer freed",
    )
    linger_timeout_s: float = Field(
        5.0,
        ge=0,
        description="After an answer sent before its request body was read (413, 401, 408, ...), how long the rest "
        "of the upload is read and dropped before the close, so the client gets the answer and not a reset; 0 "
        "closes at once",
    )

    max_string_elements: int = Field(
        512 * 1024,
        gt=0,
        description="Largest number of elements in one string (BYTES) request tensor, classify/regress examples "
        "included: each is a Python object and a TensorFlow string, about 150 bytes more than a number",
    )
    max_json_values: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Most JSON values (numbers, strings, lists, objects) one request body may hold, counted before "
        "parsing; each becomes a Python object of up to 90 bytes while the body is decoded",
    )
    codec_inline_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Bodies and answers up to this size are decoded and encoded on the event loop; larger ones in "
        "the codec worker processes, so that health, metrics and other models answer meanwhile",
    )
    codec_workers: int = Field(
        1,
        ge=1,
        description="Codec worker processes: how many large bodies are decoded or encoded at once (each may take "
        "up to about 1 GiB at the default limits)",
    )
    codec_wait_s: float = Field(
        10.0,
        ge=0,
        description="Longest wait of a large body for a free codec worker; past it the request gets 503 with "
        "Retry-After",
    )

    s3: S3Settings = Field(default_factory=S3Settings)
    tensorflow: TensorFlowSettings = Field(default_factory=TensorFlowSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)

    load_timeout_s: float = Field(
        300.0,
        ge=0,
        description="Longest time a model version may take to load and warm up (after its download); past it the "
        "load fails with DEADLINE_EXCEEDED, its warm-up is cancelled, the old version keeps serving and the load "
        "is retried with back-off; 0 means no deadline",
    )
    load_workers: int = Field(
        2, ge=1, description="Model versions loading at once; each model loads one version at a time"
    )

    model_config_list: ModelSet | None = Field(
        None,
        description="An explicit model set instead of RTSERVE_MODELS: TF Serving's model_config_list as JSON, e.g. "
        '{"config": [{"name": "iris", "base_path": "s3://models/iris", "model_version_policy": {"latest": '
        '{"num_versions": 2}}, "version_labels": {"stable": 3}}]}; each base_path holds that model\'s version '
        "folders. Set, it replaces RTSERVE_MODELS and RTSERVE_VERSION_POLICY(IES)",
    )
    allow_version_labels_for_unavailable_models: bool = Field(
        False,
        description="When a new model set is applied, let a label that is new for a model name a version that is "
        "not AVAILABLE yet (TF Serving's flag of that name); otherwise such a set is refused",
    )
    rest_enabled: bool = Field(
        True, description="Serve HTTP/REST on RTSERVE_PORT; false: gRPC only (TF Serving's --rest_api_port=0)"
    )
    prometheus_path: str = Field(
        "",
        description="Also serve /metrics at this path on the HTTP port, e.g. /monitoring/prometheus/metrics (TF "
        "Serving's monitoring config); empty: /metrics only",
    )
    model_config_file: str = Field(
        "",
        description="A TF Serving ModelServerConfig text file (model_config_list) to serve instead of the "
        "repository scan; read at start (a file that does not parse stops it) and, with "
        "RTSERVE_MODEL_CONFIG_FILE_POLL_WAIT_S, re-read and applied while serving",
    )
    model_config_file_poll_wait_s: float = Field(
        0.0,
        ge=0,
        description="Seconds between re-reads of RTSERVE_MODEL_CONFIG_FILE; a changed file is applied as the new "
        "model set (a broken one leaves the current set serving); 0: read once",
    )
    max_load_retries: int | None = Field(
        None,
        ge=0,
        description="Retries of a failed version load before it is given up (TF Serving's --max_num_load_retries); "
        "its status keeps the error until the process restarts or the model's base path changes; unset: retried "
        "for ever with back-off",
    )
    model_warmup: bool = Field(
        True,
        description="Warm a version up before it serves: its assets.extra/tf_serving_warmup_requests, or synthetic "
        "requests (TF Serving's --enable_model_warmup)",
    )
    signature_runner: Literal["auto", "session", "function"] = Field(
        "auto",
        description="How signatures run: 'session' loads the SavedModel into a TensorFlow session and runs them by "
        "tensor name (TF Serving's way, about half the per-call cost), 'function' through tf.saved_model.load's "
        "functions; 'auto' the session where it serves the version, else the functions (one log line says why); "
        "'session' fails the load where the session cannot serve it",
    )

    @field_validator("prometheus_path")
    @classmethod
    def _check_prometheus_path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("prometheus_path must start with '/'")
        return value

    @field_validator("models", "allowed_file_ops", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("version_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        parse_version_policy(value)
        return value

    @field_validator("version_policies")
    @classmethod
    def _check_policies(cls, value: dict[str, str]) -> dict[str, str]:
        for policy in value.values():
            parse_version_policy(policy)
        return value

    @property
    def serves_every_model(self) -> bool:
        return "*" in self.models

    def policy_for(self, model: str) -> VersionPolicy:
        return parse_version_policy(self.version_policies.get(model, self.version_policy))

    def tensorflow_threads(self) -> tuple[int, int]:
        """(intra_op, inter_op) thread counts, resolving 0 to the usable CPUs."""
        cpus = usable_cpus()
        return (self.tensorflow.intra_op_threads or cpus, self.tensorflow.inter_op_threads or cpus)


@dataclass(frozen=True)
class EnvironmentVariable:
    """One setting as the environment spells it, for documentation and for the chart's contract test."""

    name: str
    default: object
    description: str


def environment_variables(model: type[BaseModel] = Settings, prefix: str = "RTSERVE_") -> list[EnvironmentVariable]:
    """Every RTSERVE_* variable Settings reads, nested groups flattened with ``__``."""
    found: list[EnvironmentVariable] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += environment_variables(annotation, f"{prefix}{name.upper()}__")
            continue
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        found.append(EnvironmentVariable(f"{prefix}{name.upper()}", default, field.description or ""))
    return found
