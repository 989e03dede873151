"""Configuration: one pydantic-settings tree, environment prefix ``RTSERVE_``, nested delimiter ``__``.

Built once in ``main()`` (or by a test) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")

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
    max_tensor_elements: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest number of elements in one request tensor"
    )

    s3: S3Settings = Field(default_factory=S3Settings)  # type: ignore[arg-type]
    tensorflow: TensorFlowSettings = Field(default_factory=TensorFlowSettings)  # type: ignore[arg-type]

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
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
