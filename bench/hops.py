"""Where one request's time goes at low load: a hop table for one TF Serving REST predict at concurrency 1.

Two parts, both in one process on uvloop, with the demo model:

* **stamped**: the real app (``create_app``, the demo model loaded by the real manager), driven through its ASGI
  entry one request at a time with a fake ``receive``/``send`` (no socket: the floor's HTTP parse and write are
  the difference to a real server). Functions on the path are wrapped with ``perf_counter`` stamps (a throwaway
  instrumentation: the wrappers are installed here, never in the server), and the table is the median time
  between consecutive stamps over the requests.
* **cpu**: the same app without stamps, CPU time (``process_time``: every thread; ``thread_time``: the event
  loop's) per request at concurrency 1 and 32: on one core, 1e6 / the process's figure is the request rate the
  server could reach, whatever else the machine runs meanwhile.
* **mechanisms**: each mechanism alone, per operation: a future, a ``call_later`` timer, the thread hand-off
  (Condition notify -> inference thread -> ``call_soon_threadsafe`` -> loop wake-up) with and without the model
  call, the model call inline, metric ``.labels()`` against a bound child, the access-log line.

usage: python -m bench.hops [--requests 3000] [--ops 20000] [--json] [--parts hops,cpu,mechanisms]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import itertools
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
PATH = "/v1/models/iris:predict"

# -- stamped run ------------------------------------------------------------------------------------------------

Stamps = list[tuple[str, float]]


class _Stamper:
    """Collects (label, perf_counter) pairs of the current request, from the loop and the inference thread."""

    def __init__(self) -> None:
        self.stamps: Stamps = []

    def __call__(self, label: str) -> None:
        self.stamps.append((label, time.perf_counter()))  # list.append is atomic: both threads may stamp


def _wrap(owner: Any, name: str, before: str | None, after: str | None, stamp: _Stamper) -> Callable[[], None]:
    """Replace ``owner.name`` by a stamping wrapper (sync or async); returns the undo."""
    static = isinstance(inspect.getattr_static(owner, name), staticmethod)
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            if before:
                stamp(before)
            result = await original(*args, **kwargs)
            if after:
                stamp(after)
            return result

        setattr(owner, name, wrapper_async)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                stamp(before)
            result = original(*args, **kwargs)
            if after:
                stamp(after)
            return result

        setattr(owner, name, staticmethod(wrapper) if static else wrapper)
    return lambda: setattr(owner, name, staticmethod(original) if static else original)


@contextmanager
def _instrumented(stamp: _Stamper, servable: Any) -> Iterator[None]:
    from service import batching, dataplane
    from service.api.rest import observe, tfserving
    from service.codecs import tfserving_json
    from service.observability import telemetry

    undo = [
        _wrap(observe.InferenceObserver, "answer", "observer entered (fast lane done)", None, stamp),
        _wrap(tfserving, "target_of", "work started (ids, trace, inflight)", None, stamp),
        _wrap(observe.InferenceCall, "body", None, "body read", stamp),
        _wrap(dataplane.DataPlane, "lookup", "version leased", None, stamp),
        _wrap(tfserving_json, "decode_predict", "decode started", "decoded", stamp),
        _wrap(dataplane.DataPlane, "run", "signature + shapes + deadline checked", None, stamp),
        _wrap(
            batching.Batcher, "_enqueue", "request built (merge key, _Request, future)", "enqueued + notified", stamp
        ),
        _wrap(batching, "_settle", "loop woke up (call_soon_threadsafe)", None, stamp),
        _wrap(batching.Batcher, "submit", None, "submit returned (future done, trace)", stamp),
        _wrap(tfserving_json, "encode_predict", "encode started", "encoded", stamp),
        _wrap(servable, "run", "inference thread woke up", "servable.run returned", stamp),
    ]
    # The recording: one method since issue 13 (a function before, so that this script measures either tree).
    recorder = getattr(telemetry, "RequestRecorder", None)
    if recorder is not None:
        undo.append(_wrap(recorder, "record", "recording started", "recorded (metrics, log line)", stamp))
    else:
        undo.append(_wrap(observe, "record_request", "recording started", "recorded (metrics, log line)", stamp))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": PATH,
    "raw_path": PATH.encode(),
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


async def _exchange(app: Any, stamp: _Stamper | None) -> int:
    """One request through the ASGI app; its status."""
    sent_body = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if sent_body:
            await asyncio.Event().wait()  # after the body, receive waits for a disconnect that never comes
        sent_body = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif stamp is not None:
            stamp("response sent")

    await app(dict(SCOPE), receive, send)
    return status


async def _drive(app: Any, stamp: _Stamper, requests: int) -> list[Stamps]:
    runs: list[Stamps] = []
    statuses = set()
    for _ in range(requests):
        stamp.stamps = []
        stamp("ASGI call")
        statuses.add(await _exchange(app, stamp))
        runs.append(stamp.stamps)
    if statuses != {200}:
        raise RuntimeError(f"statuses {sorted(statuses)}")
    return runs


async def _load(app: Any, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU microseconds per request, (the whole process, the event loop's thread), ``concurrency`` at a time."""
    per_client = requests // concurrency

    async def client() -> set[int]:
        return {await _exchange(app, None) for _ in range(per_client)}

    process, loop_thread = time.process_time(), time.thread_time()
    statuses = set().union(*await asyncio.gather(*(client() for _ in range(concurrency))))
    process, loop_thread = time.process_time() - process, time.thread_time() - loop_thread
    if statuses != {200}:
        raise RuntimeError(f"statuses {sorted(statuses)}")
    done = per_client * concurrency
    return process / done * 1e6, loop_thread / done * 1e6


@contextmanager
def _app() -> Iterator[tuple[Any, Any]]:
    """The real app over the demo model, ready: (its ASGI entry, the loaded servable)."""
    from service.app import create_app
    from service.observability.logs import configure_logging
    from service.settings import Settings
    from service.tools.demo import write_demo_model

    configure_logging("info", "json", io.StringIO())  # the access line is built and formatted as in the server
    with tempfile.TemporaryDirectory(prefix="rtserve-hops-") as folder:
        write_demo_model(Path(folder) / "models" / "iris")
        settings = Settings(repository=str(Path(folder) / "models"), cache_dir=str(Path(folder) / "cache"), grpc_port=0)
        built = create_app(settings)
        components = built.components
        components.start()
        try:
            for _ in range(600):
                if components.is_ready():
                    break
                time.sleep(0.1)
            loaded = next(iter(components.manager.snapshot()["iris"].available.values()))
            yield built.rest.asgi, loaded.servable
        finally:
            components.stop()


def cpu(requests: int, concurrencies: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """CPU per request at each concurrency (no stamps): the rate one core could serve is 1e6 / the first."""
    with _app() as (app, _):
        uvloop.run(_load(app, 400, 4))  # warm-up
        return {concurrency: uvloop.run(_load(app, requests, concurrency)) for concurrency in concurrencies}


def stamped(requests: int) -> tuple[list[tuple[str, float]], float]:
    """Median microseconds of each hop (in stamp order) and of the whole request, through the real app."""
    with _app() as (app, servable):
        stamp = _Stamper()
        with _instrumented(stamp, servable):
            runs = uvloop.run(_drive(app, stamp, requests + 200))[200:]  # 200 warm-up requests
    labels = [label for label, _ in sorted(runs[0], key=lambda pair: pair[1])]
    hops: dict[str, list[float]] = {label: [] for label in labels[1:]}
    totals = []
    for run in runs:
        ordered = sorted(run, key=lambda pair: pair[1])
        if [label for label, _ in ordered] != labels:
            continue  # a request whose stamps came in another order (none expected): left out
        for (_, before), (label, after) in itertools.pairwise(ordered):
            hops[label].append((after - before) * 1e6)
        sent = next(at for label, at in ordered if label == "response sent")
        totals.append((sent - ordered[0][1]) * 1e6)
    return [(label, statistics.median(values)) for label, values in hops.items()], statistics.median(totals)


# -- mechanisms alone -------------------------------------------------------------------------------------------


def _repeat(ops: int, function: Callable[[], object]) -> float:
    """Microseconds per call of ``function``, called ``ops`` times."""
    started = time.perf_counter()
    for _ in range(ops):
        function()
    return (time.perf_counter() - started) / ops * 1e6


def _per_op(ops: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / ops * 1e6


async def _future_round(ops: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(ops):
        future = loop.create_future()
        future.set_result(None)
        await future


async def _timer(ops: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(ops):
        loop.call_later(1.0, print).cancel()


async def _handoff(ops: int, work: Callable[[], Any], lighter: bool) -> None:
    """The batcher's hand-off alone: enqueue + wake the thread; the thread runs ``work`` and answers through
    call_soon_threadsafe. ``lighter``: the thread waits on a bare lock released by the loop instead."""
    loop = asyncio.get_running_loop()
    cond = threading.Condition(threading.Lock())
    wake = threading.Lock()
    wake.acquire()
    queue: list[asyncio.Future[None]] = []
    stop = False

    def settle(future: asyncio.Future[None]) -> None:
        future.set_result(None)

    def next_future() -> asyncio.Future[None] | None:
        if lighter:
            wake.acquire()
            return None if stop else queue.pop()
        with cond:
            while not queue and not stop:
                cond.wait()
            return None if stop else queue.pop()

    def serve() -> None:
        while (future := next_future()) is not None:
            work()
            loop.call_soon_threadsafe(settle, future)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for _ in range(ops):
        future = loop.create_future()
        if lighter:
            queue.append(future)
            wake.release()
        else:
            with cond:
                queue.append(future)
                cond.notify()
        await future
    stop = True
    if lighter:
        wake.release()
    else:
        with cond:
            cond.notify()
    thread.join(5)


def mechanisms(ops: int) -> list[tuple[str, float]]:
    import numpy as np
    from prometheus_client import CollectorRegistry

    from service.observability.logs import RequestIds, RequestLog, configure_logging
    from service.observability.metrics import Metrics
    from service.runtime.tensorflow import TensorFlowLoader
    from service.tools.demo import write_demo_model

    rows = {"features": np.asarray([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}
    with tempfile.TemporaryDirectory(prefix="rtserve-hops-") as folder:
        servable = TensorFlowLoader()(write_demo_model(Path(folder) / "iris"))
    model_ops = max(ops // 10, 500)

    def model_call() -> None:
        servable.run("serving_default", rows)

    for _ in range(200):
        model_call()
    metrics = Metrics(CollectorRegistry())
    child = metrics.requests.labels("iris", "1", "tfserving", "200")
    histogram = metrics.request_duration.labels("iris", "1", "tfserving")
    configure_logging("info", "json", io.StringIO())
    access = RequestLog()
    ids = RequestIds()
    headers = {"content-type": "application/json"}

    def idle() -> None:
        return None

    def labelled_count() -> None:
        metrics.requests.labels("iris", "1", "tfserving", "200").inc()

    def labelled_observe() -> None:
        metrics.request_duration.labels("iris", "1", "tfserving").observe(0.001)

    def access_line() -> None:
        access.emit("r", "tfserving", "iris", "1", 200, 0.001, None)

    table = [
        ("model call inline (servable.run, 1 row)", _repeat(model_ops, model_call)),
        ("future: create + set_result + await", _per_op(ops, lambda: uvloop.run(_future_round(ops)))),
        ("call_later + cancel (a deadline timer)", _per_op(ops, lambda: uvloop.run(_timer(ops)))),
        ("hand-off round trip, Condition, no work", _per_op(ops, lambda: uvloop.run(_handoff(ops, idle, False)))),
        ("hand-off round trip, bare lock, no work", _per_op(ops, lambda: uvloop.run(_handoff(ops, idle, True)))),
        (
            "hand-off round trip + model call (Condition)",
            _per_op(model_ops, lambda: uvloop.run(_handoff(model_ops, model_call, False))),
        ),
        ("counter .labels(4 labels).inc()", _repeat(ops, labelled_count)),
        ("counter bound child .inc()", _repeat(ops, child.inc)),
        ("histogram .labels(3 labels).observe()", _repeat(ops, labelled_observe)),
        ("histogram bound child .observe()", _repeat(ops, lambda: histogram.observe(0.001))),
        ("access-log line (JSON, to memory)", _repeat(ops, access_line)),
        ("request id (new)", _repeat(ops, lambda: ids.of(headers))),
    ]
    logging.getLogger().handlers.clear()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--parts", default="hops,cpu,mechanisms", help="which of hops, cpu, mechanisms to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    hops, total = stamped(args.requests) if "hops" in parts else ([], 0.0)
    costs = cpu(args.requests, (1, 32)) if "cpu" in parts else {}
    alone = mechanisms(args.ops) if "mechanisms" in parts else []
    if args.json:
        cpu_us = {str(c): {"process": p, "loop_thread": t} for c, (p, t) in costs.items()}
        print(json.dumps({"hops_us": dict(hops), "total_us": total, "cpu_us": cpu_us, "mechanisms_us": dict(alone)}))
        return
    print(f"one TF Serving REST predict, 1 row, through the app's ASGI entry (median of {args.requests}), us")
    for label, value in hops:
        print(f"  {value:8.1f}  -> {label}")
    print(f"  {total:8.1f}  total (ASGI call -> response sent)")
    print("CPU per request, us (the whole process: event loop + inference thread; the event loop's thread alone)")
    for concurrency, (process, loop_thread) in costs.items():
        print(f"  c={concurrency:<3d} {process:8.1f}  {loop_thread:8.1f}")
    print("mechanisms alone, us per operation")
    for label, value in alone:
        print(f"  {value:8.2f}  {label}")


if __name__ == "__main__":
    main()
