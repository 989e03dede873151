"""Reading request bodies within the configured limits, without trusting Content-Length."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from service.api.errors import HttpError
from service.codecs.arrays import is_decimal

# Sent with a refusal that leaves the body unread, so the server drops the connection instead of keeping it
# open for bytes that may never come.
CLOSE = (("connection", "close"),)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int  # larger bodies get 413
    timeout_s: float  # a body not received in full by then gets 408 (a client that stalls holds nothing)


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limits: BodyLimits) -> bytes:
    """The whole body, refused with 413 as soon as it grows past the limit, 408 when it takes too long, and
    415 when it is compressed."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing would let a small body expand without bound (a zip bomb); clients can send plain JSON.
        raise HttpError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send an uncompressed body")
    declared = headers.get("content-length")
    if declared is not None and is_decimal(declared) and (len(declared) > 18 or int(declared) > limits.max_bytes):
        raise HttpError(413, f"request body of {declared[:40]} bytes exceeds the limit of {limits.max_bytes} bytes")
    try:
        async with asyncio.timeout(limits.timeout_s):
            return await _read_all(chunks, limits.max_bytes)
    except TimeoutError:
        raise HttpError(408, f"the request body did not arrive within {limits.timeout_s:g} s", CLOSE) from None


async def _read_all(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    chunks_read: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise HttpError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks_read.append(chunk)
    return chunks_read[0] if len(chunks_read) == 1 else b"".join(chunks_read)
