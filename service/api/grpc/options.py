"""The grpc.aio server's options, from Settings: every bound set here rather than left at grpcio's default."""

from __future__ import annotations

from service.settings import Settings

# grpc's own message-size limit sits above RTSERVE_MAX_BODY_BYTES so that a message between the two reaches our
# check (service/api/grpc/limits.py), whose refusal names the setting; grpc's text ("Received message larger than
# max (N vs. M)") names none. Beyond twice the limit grpc refuses by itself, from the message's length and without
# holding it (a 300 MB message against a 1 MiB limit: the server's RSS stayed at 33 MiB); a message between the
# limit and twice it is read whole before ours refuses it. That is the price of the clear message: at most twice
# the body limit per call, instead of once. grpc takes a C int.
INT32_MAX = 2**31 - 1
GRPC_LIMIT_FACTOR = 2
# grpcio drops calls at random once more than max_pending_requests wait to be picked up by the server (1000 by
# default, all beyond 3000): a burst of 2,000 concurrent unary calls lost ~10% CANCELLED at the defaults
# (research note, section 0 point 3). The concurrency bound (RESOURCE_EXHAUSTED, at once) is what refuses load.
MAX_PENDING_REQUESTS = 20_000
MAX_PENDING_REQUESTS_HARD = 40_000
# Pings closer together than keepalive_min_ping_interval_s are strikes; this many close the connection
# (ENHANCE_YOUR_CALM), as grpc's documented default.
MAX_PING_STRIKES = 2


def message_limit(settings: Settings) -> int:
    """The largest message (request or answer) accepted, in bytes: RTSERVE_MAX_BODY_BYTES, within grpc's C int."""
    return min(settings.max_body_bytes, INT32_MAX // GRPC_LIMIT_FACTOR)


def server_options(settings: Settings) -> list[tuple[str, int | str]]:
    """The channel arguments of the gRPC server: rtserve's, then RTSERVE_GRPC__CHANNEL_ARGUMENTS (TF Serving's
    --grpc_channel_arguments). A user's argument replaces rtserve's of the same name rather than following it,
    so that it wins whichever of two duplicates grpc would take."""
    grpc_limit = message_limit(settings) * GRPC_LIMIT_FACTOR
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", grpc_limit),
        ("grpc.max_send_message_length", grpc_limit),
        # On by default: a second server on the same port would share it silently, each getting some connections.
        ("grpc.so_reuseport", 0),
        ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS_HARD),
        ("grpc.http2.min_ping_interval_without_data_ms", round(settings.grpc.keepalive_min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        # Clients that keep an idle connection alive with pings are welcome, at the interval above.
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if settings.grpc.max_connection_age_s > 0:
        # grpc adds +-10% jitter to the age (gRFC A9), but grpcio 1.85 draws it once per server, not per connection
        # (bench/grpc_connection_age.py); Python has no hook per connection to add our own. Pods still differ.
        options += [
            ("grpc.max_connection_age_ms", round(settings.grpc.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.drain_timeout_s * 1000)),
        ]
    users = settings.grpc.channel_arguments
    return [option for option in options if option[0] not in users] + list(users.items())
