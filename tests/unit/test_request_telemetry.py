"""Per-request telemetry: the JSON log line, X-Request-Id on both protocols, and OpenTelemetry spans."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apptools import wait_until
from service.app import build_tracing, create_app
from service.observability.logs import ACCESS_LOGGER, RequestIds, RequestLog, configure_logging
from service.observability.tracing import NoTracing
from service.settings import OtelSettings, Settings

ROW = [5.1, 3.5, 1.4, 0.2]
V2_BODY = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def client(
    demo_model_dir: Path, exporter: InMemorySpanExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    cache = tmp_path_factory.mktemp("cache")
    settings = Settings(repository=str(demo_model_dir.parent.parent), cache_dir=str(cache))
    app = create_app(settings, tracing=build_tracing(OtelSettings(), exporter))
    with TestClient(app.rest.asgi, raise_server_exceptions=False) as test_client:
        wait_until(lambda: test_client.get("/v2/health/ready").status_code == 200, what="ready")
        yield test_client


# -- request ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["abc-123", "0f" * 64, "trace:span/1"])
def test_a_safe_request_id_is_kept(given: str) -> None:
    assert RequestIds().of({"x-request-id": given}) == given


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "caf\u00e9", "new\nline"])
def test_an_unsafe_or_missing_request_id_is_replaced(given: str | None) -> None:
    headers = {} if given is None else {"x-request-id": given}
    ids = RequestIds()
    generated = ids.of(headers)
    assert generated != given and len(generated) == 32 and int(generated, 16) >= 0
    assert ids.of(headers) != generated  # a new one per request


def test_new_request_ids_differ_between_processes() -> None:
    first, second = RequestIds().of({}), RequestIds().of({})
    assert first != second and first[16:] == second[16:]  # same counter, different random prefix


def test_request_id_is_echoed_on_both_protocols_and_on_errors(client: TestClient) -> None:
    v2 = client.post("/v2/models/iris/infer", json=V2_BODY, headers={"X-Request-Id": "req-v2"})
    tf = client.post("/v1/models/iris:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "req-tf"})
    missing = client.post("/v1/models/nope:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "req-404"})
    bad = client.post("/v2/models/iris/infer", content=b"{", headers={"X-Request-Id": "bad id"})
    assert (v2.status_code, v2.headers["x-request-id"]) == (200, "req-v2")
    assert (tf.status_code, tf.headers["x-request-id"]) == (200, "req-tf")
    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "req-404")
    assert bad.status_code == 400 and len(bad.headers["x-request-id"]) == 32


# -- the request log line -------------------------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.fields for record in caplog.records if record.name == ACCESS_LOGGER]  # type: ignore[attr-defined]


def test_one_log_line_per_request_without_payload(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.post("/v1/models/iris:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "one"})
    (line,) = access_lines(caplog)
    assert line.pop("latency_ms", -1) > 0  # type: ignore[operator]
    assert line == {"request_id": "one", "model": "iris", "version": "1", "protocol": "tfserving", "status": 200}


def restore_root(handlers: list[logging.Handler]) -> None:
    logging.getLogger().handlers[:] = handlers


def test_json_lines_carry_the_fields_and_exceptions() -> None:
    handlers = list(logging.getLogger().handlers)
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        RequestLog().emit("r1", "v2", "iris", "1", 200, 0.0012345, b"secret")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("service.x").exception("failed")
    finally:
        restore_root(handlers)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == ACCESS_LOGGER and first["message"] == "request" and first["level"] == "info"
    assert first["request_id"] == "r1" and first["latency_ms"] == 1.234 and "payload" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_text_lines_append_the_fields() -> None:
    handlers = list(logging.getLogger().handlers)
    stream = io.StringIO()
    configure_logging("info", "text", stream)
    try:
        RequestLog().emit("r1", "v2", "iris", "1", 503, 0.5, None)
    finally:
        restore_root(handlers)
    assert (
        stream.getvalue()
        .rstrip()
        .endswith("rtserve.access: request request_id=r1 model=iris version=1 protocol=v2 status=503 latency_ms=500.0")
    )


def test_payloads_are_logged_only_for_the_sampled_share(caplog: pytest.LogCaptureFixture) -> None:
    draws = iter([0.05, 0.5])
    log = RequestLog(payload_sample_rate=0.1, payload_max_bytes=4, draw=lambda: next(draws))
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        log.emit("a", "v2", "iris", "1", 200, 0.001, b"abcdef")
        log.emit("b", "v2", "iris", "1", 200, 0.001, b"abcdef")
    sampled, plain = access_lines(caplog)
    assert sampled["payload"] == "abcd" and sampled["payload_truncated"] is True
    assert "payload" not in plain


def test_request_lines_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        RequestLog(enabled=False).emit("a", "v2", "iris", "1", 200, 0.001, None)
    assert access_lines(caplog) == []


# -- traces ---------------------------------------------------------------------------------------------------


def test_tracing_is_off_and_not_imported_by_default() -> None:
    assert isinstance(build_tracing(OtelSettings()), NoTracing)


def test_a_request_span_with_queue_wait_and_inference_children(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    answer = client.post("/v2/models/iris/infer", json=V2_BODY, headers={"traceparent": parent, "x-request-id": "t1"})
    assert answer.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"v2 inference", "queue wait", "inference"}
    request = spans["v2 inference"]
    assert request.context is not None and request.parent is not None
    assert f"{request.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert request.parent.span_id == 0xB7AD6B7169203331
    assert request.attributes is not None
    assert dict(request.attributes) == {
        "rtserve.request_id": "t1",
        "rtserve.protocol": "v2",
        "rtserve.model_name": "iris",
        "rtserve.model_version": "1",
        "http.response.status_code": 200,
    }
    wait, inference = spans["queue wait"], spans["inference"]
    for child in (wait, inference):
        assert child.parent is not None and child.parent.span_id == request.context.span_id
    assert wait.end_time is not None and inference.start_time is not None
    assert request.start_time <= wait.start_time <= wait.end_time <= inference.start_time  # type: ignore[operator]
    assert inference.end_time <= request.end_time  # type: ignore[operator]
    assert inference.attributes is not None and inference.attributes["rtserve.batch_size"] == 1


def test_a_failed_request_has_no_batch_spans_and_an_error_free_status_below_500(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    assert client.post("/v1/models/nope:predict", json={"instances": [ROW]}).status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.name == "tfserving inference" and span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404 and span.status.is_ok
