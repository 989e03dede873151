"""Floor 1: a bare ASGI app on uvicorn that parses the TF Serving REST payload into numpy and answers, no model.

The limit of Python HTTP on this machine: uvicorn as rtserve runs it (uvloop, httptools, no access log), orjson,
numpy, and nothing else. It answers ``{"predictions": rows[:, :3]}``, the shape of a real answer.
Runs in rtserve's own virtualenv (same uvicorn, orjson and numpy), importing nothing from rtserve.

usage: python -m bench.peers.floor_asgi --port P
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_CHUNKS = 100_000
HEADERS = [(b"content-type", b"application/json")]


def answer(body: bytes) -> tuple[int, bytes]:
    try:
        rows = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        return 400, orjson.dumps({"error": str(error)})
    predictions = np.ascontiguousarray(rows[:, :3])  # orjson serializes C-contiguous arrays only
    return 200, orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    for _ in range(MAX_BODY_CHUNKS):
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    status, payload = answer(await read_body(receive)) if scope["method"] == "POST" else (200, b"{}")
    headers = [*HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
