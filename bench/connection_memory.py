"""Resident memory of one rtserve process while hostile clients hold connections (docs/reliability.md).

Two scenarios against a fresh server serving the demo model, each sampled with bench.memory's Sampler:

* ``headers``: CLIENTS connections each send a request line and then one header that never ends, 64 KiB at a
  time, for up to HEADERS_S (under the header deadline) or until the server answers or closes.
* ``unread``: UNREAD_CLIENTS connections, one every second, each ask for a large answer (ROWS rows of the demo
  model: 7.8 MB of JSON) and never read it; sampled for UNREAD_S.

``python -m bench.connection_memory [--send-timeout-s S]`` prints, for each, the RSS before, its peak, what is
held at the end while the clients are still connected, and after they left.
The server runs the code on PYTHONPATH (run it from the tree to measure).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.memory import Sampler, status_kib
from bench.servers import free_port

CLIENTS = 4
UNREAD_CLIENTS = 16  # one after another: the parse of each request reuses the memory of the last, answers pile up
HEADERS_S = 8.0
UNREAD_S = 30.0
ROWS = 200_000
CAP_BYTES = 1024 * 1024 * 1024  # per client, so the old server cannot take the machine down


def start_server(folder: Path, send_timeout_s: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    subprocess.run([sys.executable, "-m", "service", "demo-model", str(folder / "repo" / "iris")], check=True)
    env = {
        **os.environ,
        "RTSERVE_REPOSITORY": str(folder / "repo"),
        "RTSERVE_CACHE_DIR": str(folder / "cache"),
        "RTSERVE_PORT": str(port),
        "RTSERVE_GRPC_PORT": "0",
        "RTSERVE_HOST": "127.0.0.1",
        "RTSERVE_SEND_TIMEOUT_S": str(send_timeout_s),
        "RTSERVE_LOG_REQUESTS": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, port
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not get ready; see " + str(folder / "server.log"))


def endless_header(port: int, until: float) -> None:
    piece = b"a" * 65536
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        while time.monotonic() < until and sent < CAP_BYTES:
            try:
                sock.sendall(piece)
            except OSError:
                return
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                return  # answered (431) or closed


def unread_answer(port: int, until: float) -> None:
    body = b'{"instances": [' + b", ".join([b"[5.1, 3.5, 1.4, 0.2]"] * ROWS) + b"]}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body)
        time.sleep(max(0.0, until - time.monotonic()))


def scenario(name: str, port: int, pid: int, seconds: float) -> None:
    baseline = status_kib(pid)["VmRSS"]
    sampler = Sampler(pid, seconds + 2)
    sampler.start()
    until = time.monotonic() + seconds
    target = endless_header if name == "headers" else unread_answer
    count, stagger_s = (CLIENTS, 0.0) if name == "headers" else (UNREAD_CLIENTS, 1.0)
    clients = [threading.Thread(target=target, args=(port, until)) for _ in range(count)]
    for client in clients:
        client.start()
        time.sleep(stagger_s)
    time.sleep(max(0.0, until - 0.5 - time.monotonic()))
    held = status_kib(pid)["VmRSS"]  # the clients are still connected
    for client in clients:
        client.join()
    sampler.stop_event.set()
    sampler.join()
    peak = max(rss for _, rss in sampler.samples)
    final = status_kib(pid)["VmRSS"]
    print(
        f"{name}: baseline {baseline / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
        f"held at the end {held / 1024:.0f} MiB, after the clients left {final / 1024:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--send-timeout-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_server(Path(folder), args.send_timeout_s)
        try:
            scenario("headers", port, process.pid, HEADERS_S)
            time.sleep(3)
            scenario("unread", port, process.pid, UNREAD_S)
        finally:
            process.terminate()
            process.wait(60)


if __name__ == "__main__":
    main()
