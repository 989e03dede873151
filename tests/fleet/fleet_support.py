"""A test fleet on loopback: rtserve replicas behind a real haproxy, an S3 server, and a load generator.

The balancer mirrors what a Kubernetes Service does with readiness probes, and what it does not:

* like a Service, it sends traffic only to replicas whose readiness (``GET /v2/health/ready``) passes, and drops a
  replica after ``fall`` failed checks (a Service after the probe's failureThreshold x periodSeconds, here
  2 x 200 ms so that tests run fast);
* unlike a Service (kube-proxy balances connections at L4, not requests), it balances each request round robin,
  and it retries a *refused connection* on another replica (``retries`` + ``option redispatch``), as an Ingress
  controller in front of the Service does (nginx's ``proxy_next_upstream error``). A request already sent to a
  replica that dies is never retried: that is the loss the SIGKILL test bounds;
* a pod deleted by Kubernetes leaves the endpoints at once, in parallel with its SIGTERM; here haproxy only learns
  it from the failing check, which is why RTSERVE_SHUTDOWN_DELAY_S must exceed its detection time.

Every response carries ``X-Served-By`` (the haproxy server name) so that tests can tell replicas apart.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from apptools import ServerProcess, wait_until
from s3tools import S3Server
from service.repository.s3 import S3Repository
from service.tools.fleet import ReplicaView, fleet_status
from service.tools.push import push_version

PREDICT = "/v1/models/iris:predict"
SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
CHECK_INTERVAL_MS = 200
CHECK_FALL = 2
# The replicas' poll interval: far longer than the disagreement window the rollout test allows, so that a
# switch made at each replica's poll instead of at activate_at would show.
POLL_INTERVAL_S = 2.0
# Longer than haproxy needs to see a failing readiness check (fall x inter, plus a check's own latency).
SHUTDOWN_DELAY_S = 1.5

assert SHUTDOWN_DELAY_S > 2 * CHECK_FALL * CHECK_INTERVAL_MS / 1000

HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # A refused connection (a dead replica not yet marked down) is retried, on another replica every time.
    retries 3
    option redispatch 1

frontend rtserve
    bind 127.0.0.1:{port}
    default_backend replicas
    # Also on responses haproxy makes itself (a 502 for a request cut off by a dying replica).
    http-after-response set-header X-Served-By %[srv_name]

backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter {inter}ms fall {fall} rise 1
{servers}
"""


# -- haproxy --------------------------------------------------------------------------------------------------


class Haproxy:
    """haproxy in the foreground (``-db``) with a per-test config and a stats socket to read server states."""

    def __init__(self, folder: Path, port: int, backends: Sequence[tuple[str, int]]) -> None:
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy; see .ci/run)")
        self.url = f"http://127.0.0.1:{port}"
        self._socket = folder / "haproxy.sock"
        servers = "\n".join(f"    server {name} 127.0.0.1:{p} check" for name, p in backends)
        config = folder / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=self._socket, port=port, inter=CHECK_INTERVAL_MS, fall=CHECK_FALL, servers=servers
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config:\n{check.stdout}{check.stderr}")
        self._log = (folder / "haproxy.log").open("wb")
        self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, 0.05, "haproxy to listen")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("haproxy exited early")
        try:
            return bool(self.states())
        except OSError:
            return False

    def states(self) -> dict[str, str]:
        """Each replica's state as haproxy sees it: UP, DOWN, or a transition such as 'UP 1/2'."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self._socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas" and row["svname"] != "BACKEND"
        }

    def wait_state(self, server: str, state: str, timeout_s: float = 30.0) -> float:
        """Wait until ``server`` is in ``state``; the wall-clock time it was seen so (polled every 10 ms)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.states().get(server) == state:
                return time.time()
            time.sleep(0.01)
        raise AssertionError(f"haproxy did not see {server} {state} within {timeout_s}s: {self.states()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._log.close()


# -- replicas -------------------------------------------------------------------------------------------------


class Replica:
    """One `rtserve serve` process on a fixed loopback port; restartable, each start with its own log."""

    def __init__(self, name: str, port: int, env: Mapping[str, str], folder: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = {**env, "RTSERVE_CACHE_DIR": str(folder / f"cache-{name}")}
        self._folder = folder
        self._starts = 0
        self.process = self._spawn()

    def _spawn(self) -> ServerProcess:
        self._starts += 1
        return ServerProcess(self._env, self.port, self._folder / f"{self.name}-{self._starts}.log")

    @property
    def alive(self) -> bool:
        return self.process.process.poll() is None

    def start(self) -> None:
        if not self.alive:
            self.process = self._spawn()


@dataclass
class Fleet:
    """Everything the fleet tests drive: replicas, the balancer, the S3 server and the repository on it."""

    replicas: list[Replica]
    haproxy: Haproxy
    s3: S3Server
    bucket: str
    repository: S3Repository
    # The SavedModel folders of every model the replicas serve, to publish them again after an S3 restart.
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.haproxy.url

    @property
    def repository_uri(self) -> str:
        return f"s3://{self.bucket}/models"

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def views(self) -> list[ReplicaView]:
        return fleet_status([r.url for r in self.replicas])

    def wait_views(self, predicate: Callable[[list[ReplicaView]], bool], timeout_s: float, what: str) -> None:
        wait_until(lambda: predicate(self.views()), timeout_s, 0.1, what)

    def serving_version(self, model: str = "iris") -> int:
        """The default version every replica serves (they must agree)."""
        defaults = {view.models[model].default for view in self.views()}
        assert len(defaults) == 1, f"replicas disagree on {model}: {defaults}"
        (version,) = defaults
        assert version is not None
        return version

    def push(self, model: str, source: Path, version: int | None = None) -> int:
        return push_version(self.repository, source, model, version)

    def restart(self, replica: Replica) -> None:
        replica.start()
        replica.process.wait_ready()
        self.haproxy.wait_state(replica.name, "UP")

    def restore(self) -> None:
        """Back to the invariant every test starts from: S3 up with every model, every replica ready and UP."""
        if not self.s3.running:
            self.s3.start()
        if not self.s3.bucket_exists(self.bucket):  # moto forgets everything on a restart
            self.s3.create_bucket(self.bucket)
        for model, source in self.sources.items():
            if not self.repository.list_versions(model):
                self.push(model, source)
        for replica in self.replicas:
            self.restart(replica)


# -- load -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it. Times are wall-clock (time.time()), comparable with activate_at."""

    sent: float
    received: float
    status: int  # 0: no HTTP answer at all (a transport error)
    version: str  # X-Model-Version
    backend: str  # X-Served-By: the haproxy server name
    retry_after: str | None = None
    error: str = ""  # the transport error, when status is 0

    @property
    def latency(self) -> float:
        return self.received - self.sent


class Load:
    """Closed-loop clients (each sends its next request when the last is answered), bounded in count and time."""

    def __init__(
        self,
        url: str,
        path: str = PREDICT,
        body: Any = None,
        clients: int = 4,
        max_requests: int = 50_000,
        max_seconds: float = 60.0,
    ) -> None:
        self._url = url + path
        self._body = SETOSA if body is None else body
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._samples: list[Sample] = []
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.samples

    @property
    def samples(self) -> list[Sample]:
        return sorted(self._samples, key=lambda s: s.sent)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        wait_until(lambda: len(self._samples) >= count, timeout_s, 0.02, f"{count} requests")

    def _client(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set() and len(self._samples) < self._max_requests and time.monotonic() < deadline:
                self._samples.append(self._one(http))

    def _one(self, http: httpx.Client) -> Sample:
        sent = time.time()
        try:
            response = http.post(self._url, json=self._body)
        except httpx.HTTPError as error:
            return Sample(sent, time.time(), 0, "", "", error=f"{type(error).__name__}: {error}")
        headers = response.headers
        return Sample(
            sent,
            time.time(),
            response.status_code,
            headers.get("x-model-version", ""),
            headers.get("x-served-by", ""),
            headers.get("retry-after"),
        )


# -- numbers for the report -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def summarize(samples: Sequence[Sample], start: float | None = None, end: float | None = None) -> dict[str, Any]:
    """Requests sent and failed, status counts and latency, over the samples sent within [start, end]."""
    chosen = [s for s in samples if (start is None or s.sent >= start) and (end is None or s.sent <= end)]
    latencies = [s.latency for s in chosen]
    return {
        "sent": len(chosen),
        "failed": sum(1 for s in chosen if s.status != 200),
        "statuses": dict(Counter(str(s.status) for s in chosen)),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
    }


def by_backend(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.backend, []).append(sample)
    return grouped


@contextmanager
def sampled(read: Callable[[], float], interval_s: float = 0.1) -> Iterator[list[float]]:
    """Call ``read`` every ``interval_s`` in a thread while the block runs; the values collected."""
    values: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            values.append(read())
            stop.wait(interval_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield values
    finally:
        stop.set()
        thread.join(5)
