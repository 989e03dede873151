"""Reading request bodies within the configured limits, without trusting Content-Length."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from service.api.errors import HttpError


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it grows past ``max_bytes``; compressed bodies get 415."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Decompressing would let a small body expand without bound (a zip bomb); clients can send plain JSON.
        raise HttpError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send an uncompressed body")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HttpError(413, f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks_read: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise HttpError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks_read.append(chunk)
    return chunks_read[0] if len(chunks_read) == 1 else b"".join(chunks_read)
