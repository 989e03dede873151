"""The request path at low load (issue 13): what a request pays before its answer leaves, and what it pays once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from apptools import wait_until
from service.app import create_app
from service.observability.logs import ACCESS_LOGGER
from service.observability.metrics import Metrics
from service.observability.telemetry import RequestRecorder, Telemetry
from service.settings import Settings

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
PATH = "/v1/models/iris:predict"
COUNTED = {"model_name": "iris", "model_version": "1", "protocol": "tfserving", "code": "200"}


def _scope() -> dict[str, Any]:
    # What the fast lane and the handlers read of a request's scope (a server sends more).
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    return {"type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(), "headers": headers}


def test_the_fast_lane_counts_and_logs_a_request_once_its_answer_is_sent(
    demo_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(repository=str(demo_model_dir.parent.parent), cache_dir=str(tmp_path / "cache"))
    app = create_app(settings)
    registry = app.components.metrics.registry

    def counted() -> float:
        return registry.get_sample_value("rtserve_requests_total", COUNTED) or 0.0

    def lines() -> int:
        return sum(record.name == ACCESS_LOGGER for record in caplog.records)

    seen_at_send: list[tuple[float, int]] = []
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            seen_at_send.append((counted(), lines()))

    with TestClient(app.rest.asgi) as client, caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, what="ready")
        asyncio.run(app.rest.asgi(_scope(), receive, send))
        assert statuses == [200]
        assert seen_at_send == [(0.0, 0)]  # nothing recorded while the answer was being sent
        assert (counted(), lines()) == (1.0, 1)  # and recorded exactly once right after


def test_the_recorder_counts_under_the_same_labels_and_looks_each_series_up_once() -> None:
    metrics = Metrics(CollectorRegistry())
    lookups: list[tuple[str, ...]] = []
    labels = metrics.requests.labels

    def counting_labels(*values: str) -> Any:
        lookups.append(values)
        return labels(*values)

    metrics.requests.labels = counting_labels  # type: ignore[method-assign]
    recorder = RequestRecorder(metrics, Telemetry(), "grpc-tfserving")
    for _ in range(3):
        recorder.record("r", None, ("iris", "1", 200), 0.002)
    recorder.record("r", None, ("", "", 404), 0.001)

    assert lookups == [("iris", "1", "grpc-tfserving", "200"), ("", "", "grpc-tfserving", "404")]
    value = metrics.registry.get_sample_value
    ok = {"model_name": "iris", "model_version": "1", "protocol": "grpc-tfserving"}
    assert value("rtserve_requests_total", {**ok, "code": "200"}) == 3.0
    assert value("rtserve_request_duration_seconds_count", ok) == 3.0
    missing = {"model_name": "", "model_version": "", "protocol": "grpc-tfserving"}
    assert value("rtserve_requests_total", {**missing, "code": "404"}) == 1.0
    assert value("rtserve_request_duration_seconds_sum", missing) == pytest.approx(0.001)
