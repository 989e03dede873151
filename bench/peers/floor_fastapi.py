"""Floor 2: the bare ASGI floor's work through FastAPI routing and Request/Response objects (the framework's cost).

Same parsing and answer as ``floor_asgi``; same uvicorn settings. Runs in rtserve's own virtualenv.

usage: python -m bench.peers.floor_fastapi --port P
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request, Response

from bench.peers.floor_asgi import answer

app = FastAPI()


@app.post("/v1/models/{model}:predict")
async def predict(model: str, request: Request) -> Response:
    status, payload = answer(await request.body())
    return Response(payload, status, media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
