"""Hot reload end to end: the real server process, a real S3-compatible server (moto), real TensorFlow models.

One story in order: version 2 is pushed while a client sends requests (every request succeeds, the answering
version switches from 1 to 2 and never back); a corrupt version 3 leaves 2 serving; S3 stopped for several polls
leaves the server serving and ready; S3 back, a new version is picked up; SIGTERM exits 0.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from apptools import running_server, wait_until
from conftest import S3Server
from modelfactory import loops_on_zeros_model
from service.repository.local import LocalRepository
from service.repository.s3 import S3Repository
from service.tools.push import push_version

PREDICT = "/v1/models/iris:predict"
SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


class Client(threading.Thread):
    """Sends predictions back to back, bounded in count and time, recording (status, answering version)."""

    def __init__(self, url: str, max_requests: int = 5000, max_seconds: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.results: list[tuple[int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set() and len(self.results) < self.max_requests and time.monotonic() < deadline:
                response = http.post(PREDICT, json=SETOSA)
                self.results.append((response.status_code, response.headers.get("X-Model-Version", "")))

    def seen(self, version: str) -> bool:
        return any(v == version for _, v in self.results[-50:])


def scrape(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    wanted = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_hot_reload_corrupt_version_and_s3_outage(
    s3_server: S3Server, demo_model_dir: Path, corrupt_model_dir: Path, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket()
    repository = S3Repository(bucket, "models", s3_server.settings())
    assert push_version(repository, demo_model_dir, "iris") == 1
    env = {
        "RTSERVE_REPOSITORY": f"s3://{bucket}/models",
        "RTSERVE_S3__ENDPOINT_URL": s3_server.endpoint_url,
        "RTSERVE_S3__CONNECT_TIMEOUT_S": "1",
        "RTSERVE_S3__READ_TIMEOUT_S": "3",
        "RTSERVE_S3__MAX_ATTEMPTS": "1",
        "RTSERVE_MODELS": "iris",
        "RTSERVE_POLL_INTERVAL_S": "0.3",
        "RTSERVE_POLL_MAX_BACKOFF_S": "1",
        "RTSERVE_LOAD_RETRY_INITIAL_S": "1",
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
    }
    with running_server(env, tmp_path) as server:
        # 1. Version 2 arrives under load.
        client = Client(server.url)
        client.start()
        wait_until(lambda: len(client.results) >= 20, 30, what="the client to get going")
        assert push_version(repository, demo_model_dir, "iris") == 2
        wait_until(lambda: client.seen("2"), 60, what="version 2 to answer")
        time.sleep(0.5)
        client.stop.set()
        client.join(30)
        statuses = {status for status, _ in client.results}
        versions = [int(version) for _, version in client.results]
        assert statuses == {200}, f"failed requests during the swap: {statuses}"
        assert versions[0] == 1
        assert versions[-1] == 2
        assert versions == sorted(versions), "a request went back to version 1 after 2 answered"
        print(
            f"swap under load: {len(versions)} requests, {versions.count(1)} by v1, {versions.count(2)} by v2, 0 failed"
        )

        # 2. A corrupt version 3 never replaces 2.
        assert push_version(repository, corrupt_model_dir, "iris") == 3

        def version_3_failed() -> bool:
            body = httpx.get(server.url + "/v1/models/iris").json()
            status = {s["version"]: s for s in body["model_version_status"]}
            return "3" in status and status["3"]["state"] == "END" and status["3"]["status"]["error_message"] != ""

        wait_until(version_3_failed, 60, what="version 3 to fail to load")
        response = httpx.post(server.url + PREDICT, json=SETOSA)
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == "2"
        assert scrape(server.url, "rtserve_model_loads_total", {"model_version": "3", "outcome": "failure"}) >= 1
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200

        # 3. S3 goes away for several polls: still serving, still ready, errors counted.
        errors_before = scrape(server.url, "rtserve_repository_poll_errors_total")
        s3_server.stop()
        wait_until(
            lambda: scrape(server.url, "rtserve_repository_poll_errors_total") >= errors_before + 3,
            60,
            what="three failed polls",
        )
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        during = httpx.post(server.url + PREDICT, json=SETOSA)
        assert during.status_code == 200
        assert during.headers["X-Model-Version"] == "2"

        # 4. S3 comes back (moto starts empty): a newly published version is picked up.
        s3_server.start()
        s3_server.create_bucket(bucket)
        assert push_version(repository, demo_model_dir, "iris", version=4) == 4

        def version_4_answers() -> bool:
            return httpx.post(server.url + PREDICT, json=SETOSA).headers.get("X-Model-Version") == "4"

        wait_until(version_4_answers, 60, what="version 4 to answer after the outage")


def test_half_uploaded_version_is_never_served(s3_server: S3Server, demo_model_dir: Path, tmp_path: Path) -> None:
    """A crashed upload (graph, no variables, no MANIFEST.json) never answers; version 1 keeps serving."""
    bucket = s3_server.create_bucket()
    repository = S3Repository(bucket, "models", s3_server.settings())
    push_version(repository, demo_model_dir, "iris")
    s3_server.client().upload_file(str(demo_model_dir / "saved_model.pb"), bucket, "models/iris/2/saved_model.pb")
    env = {
        "RTSERVE_REPOSITORY": f"s3://{bucket}/models",
        "RTSERVE_S3__ENDPOINT_URL": s3_server.endpoint_url,
        "RTSERVE_POLL_INTERVAL_S": "0.2",
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
    }
    with running_server(env, tmp_path) as server:
        deadline = time.monotonic() + 3.0  # about fifteen polls
        while time.monotonic() < deadline:
            response = httpx.post(server.url + PREDICT, json=SETOSA)
            assert response.status_code == 200
            assert response.headers["X-Model-Version"] == "1"
            time.sleep(0.05)
        statuses = httpx.get(server.url + "/v1/models/iris").json()["model_version_status"]
        assert all(s["state"] != "AVAILABLE" for s in statuses if s["version"] == "2")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), for the figure in docs/reliability.md."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ReadinessWatcher(threading.Thread):
    """Asks /v2/health/ready every 50 ms, bounded in time, and records every answer."""

    def __init__(self, url: str, max_seconds: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_seconds = max_seconds
        self.codes: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self.stop.wait(0.05) and time.monotonic() < deadline:
                self.codes.append(http.get("/v2/health/ready").status_code)


def version_status(url: str, model: str, version: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/models/{model}", timeout=10)
    found = [s for s in response.json().get("model_version_status", []) if s["version"] == version]
    return found[0] if found else {}


def test_a_warm_up_that_loops_for_ever_never_holds_another_model(demo_model_dir: Path, tmp_path: Path) -> None:
    """Real TensorFlow: a model whose warm-up loops for ever is published beside iris, then iris version 2.

    iris version 2 loads and serves while the loop runs; the replica stays ready throughout (a new model never
    takes it out of its Service); at RTSERVE_LOAD_TIMEOUT_S the looping version fails with DEADLINE_EXCEEDED and
    its while_loop is cancelled (no abandoned load, the CPU it burnt is given back).
    """
    root = tmp_path / "models"
    repository = LocalRepository(root)
    repository.upload_version("iris", 1, demo_model_dir)
    env = {
        "RTSERVE_REPOSITORY": str(root),
        "RTSERVE_MODELS": "*",
        "RTSERVE_POLL_INTERVAL_S": "0.3",
        "RTSERVE_LOAD_TIMEOUT_S": "4",
        "RTSERVE_LOAD_RETRY_INITIAL_S": "600",  # one attempt within the test
        "RTSERVE_CACHE_DIR": str(tmp_path / "cache"),
    }
    with running_server(env, tmp_path) as server:
        watcher = ReadinessWatcher(server.url)
        watcher.start()
        repository.upload_version("loops", 1, loops_on_zeros_model(tmp_path / "src" / "loops"))
        wait_until(lambda: version_status(server.url, "loops", "1").get("state") == "LOADING", 30, what="the loop")
        repository.upload_version("iris", 2, demo_model_dir)

        def iris_answers_from_2() -> bool:
            response = httpx.post(server.url + PREDICT, json=SETOSA, timeout=10)
            return response.status_code == 200 and response.headers["X-Model-Version"] == "2"

        wait_until(iris_answers_from_2, 60, what="iris version 2 while the other model's warm-up loops")

        def timed_out() -> bool:
            return version_status(server.url, "loops", "1").get("state") == "END"

        wait_until(timed_out, 60, what="the looping warm-up to fail at its deadline")
        failed = version_status(server.url, "loops", "1")["status"]
        assert failed["error_code"] == "DEADLINE_EXCEEDED"
        assert "RTSERVE_LOAD_TIMEOUT_S=4s" in failed["error_message"]
        wait_until(lambda: scrape(server.url, "rtserve_model_loads_abandoned") == 0.0, 30, what="the cancellation")
        assert scrape(server.url, "rtserve_model_loads_total", {"model_name": "loops", "outcome": "failure"}) == 1.0
        before = process_cpu_seconds(server.process.pid)
        time.sleep(2.0)  # a figure for the docs, not an assertion: the loop no longer burns a core
        print(f"CPU after the cancellation: {process_cpu_seconds(server.process.pid) - before:.2f}s in 2s")
        watcher.stop.set()
        watcher.join(10)
        assert watcher.codes and set(watcher.codes) == {200}, "the replica left its Service while a model loaded"
        assert iris_answers_from_2()
