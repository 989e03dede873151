"""API keys: parsing the keys file, reading keys from headers, constant-time matching, reloads."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.api.keys import KeyFile, is_accepted, parse_keys, presented_keys
from service.api.rest.auth import ApiKeyGate, exempt_paths
from service.observability.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_keys_skips_comments_and_blank_lines() -> None:
    text = "# rtserve keys\n\n  alpha  \n\t# indented comment\nbeta\r\n   \n"
    assert parse_keys(text) == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("headers", "keys"),
    [
        ([], []),
        ([(b"authorization", b"Bearer abc")], [b"abc"]),
        ([(b"authorization", b"bEaReR   abc  ")], [b"abc"]),
        ([(b"authorization", b"Basic abc")], []),
        ([(b"authorization", b"Bearer")], []),
        ([(b"authorization", b"Bearer ")], []),
        ([(b"x-api-key", b" abc ")], [b"abc"]),
        ([(b"x-api-key", b"")], []),
        ([(b"x-api-key", b"one"), (b"authorization", b"Bearer two")], [b"one", b"two"]),
        ([(b"content-type", b"application/json")], []),
    ],
)
def test_presented_keys(headers: list[tuple[bytes, bytes]], keys: list[bytes]) -> None:
    assert presented_keys(headers) == keys


def test_is_accepted_compares_against_every_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("first\nsecond\nthird\n")
    digests = KeyFile(path).digests()
    assert len(digests) == 3
    assert is_accepted(b"second", digests)
    assert is_accepted(b"third", digests)
    assert not is_accepted(b"secon", digests)
    assert not is_accepted(b"second\n", digests)
    assert not is_accepted(b"", digests)
    assert not is_accepted(b"first", ())


def test_changes_are_read_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("old\n")
    clock = FakeClock()
    keys = KeyFile(path, clock)
    path.write_text("new-key\n")
    clock.now += 0.5
    assert not is_accepted(b"new-key", keys.digests())  # not looked at yet
    clock.now += 0.6
    assert is_accepted(b"new-key", keys.digests())
    assert not is_accepted(b"old", keys.digests())


def test_an_unreadable_file_keeps_the_last_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    path.write_text("kept\n")
    clock = FakeClock()
    keys = KeyFile(path, clock)
    path.unlink()
    clock.now += 2
    with caplog.at_level(logging.WARNING):
        assert is_accepted(b"kept", keys.digests())
    assert "keeping the last keys" in caplog.text


def test_an_empty_file_accepts_nothing_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    path.write_text("# no keys yet\n")
    with caplog.at_level(logging.WARNING):
        keys = KeyFile(path)
    assert keys.digests() == ()
    assert "holds no key" in caplog.text


def test_a_missing_file_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RTSERVE_AUTH__KEYS_FILE"):
        KeyFile(tmp_path / "absent")


# -- the gate over every ASGI scope type: a recording app stands for the rest of the stack ----------------------


class Recorder:
    """The app behind the gate: records the scopes it is called with."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope["type"])


def gate_over(tmp_path: Path, app: Recorder) -> ApiKeyGate:
    path = tmp_path / "keys"
    path.write_text("right\n")
    failures = Metrics(CollectorRegistry()).auth_failures
    return ApiKeyGate(app, KeyFile(path), exempt_paths(True, True), failures)


def call_gate(gate: ApiKeyGate, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gate(scope, receive, send))
    return sent


def websocket(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "websocket", "path": path, "headers": headers}


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/health/live"])
@pytest.mark.parametrize("headers", [[], [(b"x-api-key", b"wrong")]], ids=["no key", "wrong key"])
def test_a_websocket_without_a_good_key_is_refused(
    tmp_path: Path, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Before: every scope but HTTP passed the gate unchecked. Exemptions are for the HTTP probes only."""
    app = Recorder()
    sent = call_gate(gate_over(tmp_path, app), websocket(path, headers))
    assert app.scopes == []
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_websocket_with_a_good_key_passes(tmp_path: Path) -> None:
    app = Recorder()
    call_gate(gate_over(tmp_path, app), websocket("/v2/models/iris", [(b"authorization", b"Bearer right")]))
    assert app.scopes == ["websocket"]


def test_lifespan_passes_without_a_key(tmp_path: Path) -> None:
    app = Recorder()
    call_gate(gate_over(tmp_path, app), {"type": "lifespan"})
    assert app.scopes == ["lifespan"]


def test_an_unknown_scope_type_is_refused(tmp_path: Path) -> None:
    app = Recorder()
    with pytest.raises(ValueError, match="scope type 'webtransport'"):
        call_gate(gate_over(tmp_path, app), {"type": "webtransport", "path": "/", "headers": []})
    assert app.scopes == []
