"""API keys, for every front end: the keys file (a mounted Kubernetes Secret, one key per line) re-read when it
changes, the keys a request presents, and the constant-time check. The REST gate (service/api/rest/auth.py) and
the gRPC interceptor (service/api/grpc/auth.py) apply it in their protocols' terms.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (HTTP headers or gRPC metadata). No key:
refused as ``missing_key`` (HTTP 401, gRPC UNAUTHENTICATED); a key that matches none: ``invalid_key`` (403,
PERMISSION_DENIED).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEYS_FILE_SETTING = "RTSERVE_AUTH__KEYS_FILE"
# How often the keys file is looked at: a stat per second at most, never one per request.
RECHECK_S = 1.0
MISSING = "missing_key"
INVALID = "invalid_key"
MESSAGES = {
    MISSING: "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    INVALID: "the API key is not valid",
}


def parse_keys(text: str) -> list[str]:
    """The keys of a keys file: one per line, surrounding blanks stripped, '#' comments and blank lines skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _digest(key: bytes) -> bytes:
    # Comparing fixed-length digests keeps a key's length out of the timing as well.
    return hashlib.sha256(key).digest()


@dataclass(frozen=True)
class _Snapshot:
    identity: tuple[int, int, int, int]  # device, inode, mtime_ns, size: changes when a Secret update lands
    digests: tuple[bytes, ...]


class KeyFile:
    """The accepted keys, read from ``path`` and re-read when the file changes (checked at most once a second).

    The first read must succeed (a server told to authenticate must not start open). Later failures keep the
    last good keys and are logged.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._checked_at = clock()
        try:
            self._snapshot = self._read()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{KEYS_FILE_SETTING}: cannot read {path}: {error}") from error

    def digests(self) -> tuple[bytes, ...]:
        now = self._clock()
        if now - self._checked_at >= RECHECK_S:
            self._checked_at = now
            self._refresh()
        return self._snapshot.digests

    def refusal(self, candidates: list[bytes]) -> str | None:
        """None when one of the presented keys is accepted, else why not (MISSING or INVALID)."""
        if not candidates:
            return MISSING
        digests = self.digests()
        # Every candidate is checked (no short-circuit), so timing says nothing about which header held a key.
        accepted = [is_accepted(candidate, digests) for candidate in candidates]
        return None if any(accepted) else INVALID

    def _refresh(self) -> None:
        try:
            if self._identity() != self._snapshot.identity:
                self._snapshot = self._read()
                log.info("API keys reloaded from %s (%d keys)", self._path, len(self._snapshot.digests))
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot re-read the API keys file %s, keeping the last keys: %s", self._path, error)

    def _identity(self) -> tuple[int, int, int, int]:
        stat = self._path.stat()
        return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> _Snapshot:
        identity = self._identity()
        keys = parse_keys(self._path.read_text(encoding="utf-8"))
        if not keys:
            log.warning("the API keys file %s holds no key: every request that needs one is refused", self._path)
        return _Snapshot(identity, tuple(_digest(key.encode("utf-8")) for key in keys))


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request carries, from ``Authorization: Bearer`` and ``X-API-Key`` (lower-case names)."""
    keys: list[bytes] = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"x-api-key" and value.strip():
            keys.append(value.strip())
    return keys


def is_accepted(candidate: bytes, digests: Iterable[bytes]) -> bool:
    """Constant time in the candidate: it is compared with every key, never stopping at a match or a mismatch."""
    digest = _digest(candidate)
    accepted = False
    for known in digests:
        accepted |= hmac.compare_digest(digest, known)
    return accepted
