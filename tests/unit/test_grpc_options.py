"""The gRPC server's options, built from Settings; the domain codes' gRPC statuses; the names health answers for."""

from __future__ import annotations

import grpc

from service.api.grpc.health import health_names
from service.api.grpc.observe import status_code
from service.api.grpc.options import INT32_MAX, server_options
from service.errors import Code
from service.settings import GrpcSettings, Settings


def options(**changes: object) -> dict[str, int]:
    return dict(server_options(Settings(**changes)))  # type: ignore[arg-type]


def test_defaults_set_every_bound() -> None:
    opts = options()
    assert opts["grpc.max_receive_message_length"] == 2 * 64 * 1024 * 1024  # above ours: our check names it
    assert opts["grpc.max_send_message_length"] == 2 * 64 * 1024 * 1024
    assert opts["grpc.so_reuseport"] == 0
    assert opts["grpc.server.max_pending_requests"] >= 20_000
    assert opts["grpc.server.max_pending_requests_hard_limit"] > opts["grpc.server.max_pending_requests"]
    assert opts["grpc.max_connection_age_ms"] == 300_000
    assert opts["grpc.max_connection_age_grace_ms"] == 30_000  # RTSERVE_DRAIN_TIMEOUT_S
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert opts["grpc.http2.max_ping_strikes"] == 2
    assert opts["grpc.keepalive_permit_without_calls"] == 1


def test_limits_follow_the_settings() -> None:
    opts = options(
        max_body_bytes=1000,
        drain_timeout_s=2.5,
        grpc=GrpcSettings(max_connection_age_s=1.5, keepalive_min_ping_interval_s=0.25),
    )
    assert opts["grpc.max_receive_message_length"] == 2000
    assert opts["grpc.max_connection_age_ms"] == 1500
    assert opts["grpc.max_connection_age_grace_ms"] == 2500
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 250


def test_an_age_of_zero_sets_no_age() -> None:
    opts = options(grpc=GrpcSettings(max_connection_age_s=0))
    assert "grpc.max_connection_age_ms" not in opts and "grpc.max_connection_age_grace_ms" not in opts


def test_a_huge_body_limit_stays_within_grpcs_int() -> None:
    assert options(max_body_bytes=10 * 2**30)["grpc.max_receive_message_length"] <= INT32_MAX


def test_every_domain_code_is_the_grpc_status_of_the_same_name_and_number() -> None:
    for code in Code:
        status = status_code(code)
        assert status.name == code.name
        assert status.value[0] == code.value
    assert {status.name for status in grpc.StatusCode} == {code.name for code in Code}


def test_health_answers_for_the_server_every_service_and_tf_servings_short_names() -> None:
    names = health_names(["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "inference.X"])
    assert names == {
        "",
        "tensorflow.serving.PredictionService",
        "PredictionService",
        "tensorflow.serving.ModelService",
        "ModelService",
        "inference.X",
    }


def test_channel_arguments_follow_rtserves_and_replace_the_same_names() -> None:
    arguments = {"grpc.max_connection_age_ms": 2000, "grpc.max_concurrent_streams": 10, "grpc.primary_user_agent": "x"}
    listed = server_options(Settings(grpc=GrpcSettings(channel_arguments=arguments)))
    names = [name for name, _ in listed]
    assert names.count("grpc.max_connection_age_ms") == 1, "the user's replaces rtserve's 300 s"
    assert listed[-3:] == list(arguments.items())
    assert dict(listed)["grpc.max_connection_age_grace_ms"] == 30_000  # rtserve's others stay
