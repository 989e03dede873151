"""Adaptive batching: one bounded queue and one inference thread per loaded model version.

Requests are enqueued from the event loop without blocking and answered through their asyncio future. The
inference thread coalesces queued requests of one signature into a single model call, concatenated along the
first (batch) dimension, and splits the outputs back by row counts. Waiting for company is adaptive:

* a queue that already holds a full batch runs at once;
* a lone request on a version idle for longer than ``batch_timeout_us`` runs at once (low load pays nothing);
* a lone request right after a wait that drew no company runs at once too (a single closed-loop client would
  otherwise pay the timeout on every request); the next batch of more than one request re-arms the wait;
* otherwise the oldest request waits at most ``batch_timeout_us`` from its arrival for the batch to fill.

These rules are one pure function, ``company_wait`` (with ``company_expected_after``), and every time the batcher
reads comes from its ``clock`` (time.monotonic unless a test injects one), so they are tested as logic.

Only signatures that answer each row the same batched as alone merge requests (service/batch_safety.py decides,
at construction, on the loading thread); the others still queue here but run one request per model call. A merged
call that fails, whatever the error, is rerun request by request so that only the culprit fails and its message
reaches it alone. A request whose caller stopped waiting (the client went away, its deadline passed) leaves the
queue at once and never runs.

Requests of one signature run in arrival order: a batch is always a prefix of that signature's queued requests.
``rtserve_batch_size`` counts requests per model call (not rows). After a batch is answered, the thread feeds its
inputs to the version's drift monitor, if it has one (observability/drift.py): off the event loop and after the reply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.batch_safety import UNSAFE, Verdict, decide, log_verdicts
from service.codecs.arrays import quote
from service.errors import DeadlineExceeded, Overloaded, Unavailable
from service.observability.drift import DriftMonitor
from service.observability.metrics import Metrics
from service.observability.tracing import CURRENT_TRACE
from service.runtime.base import Servable
from service.settings import BatchingSettings
from service.tensors import SignatureSpec

log = logging.getLogger(__name__)

# Why a queued request left without running (the reason label of rtserve_requests_dropped_total).
_CANCELLED, _DEADLINE = "cancelled", "deadline"
_DROPS = (_CANCELLED, _DEADLINE)

Outputs = dict[str, np.ndarray]
# What a request gets back: its outputs, or the exception to raise in its caller.
Outcome = Outputs | BaseException
# Dtype and trailing shape of every input, in signature order: requests with equal keys concatenate.
MergeKey = tuple[tuple[np.dtype[Any], tuple[int, ...]], ...]


def merge_key(input_names: Sequence[str], inputs: Mapping[str, np.ndarray]) -> tuple[int, MergeKey] | None:
    """(rows, key) of a request, or None when its inputs do not agree on a batch dimension."""
    parts = []
    rows = -1
    for name in input_names:
        array = inputs.get(name)
        if array is None or array.ndim == 0 or rows not in (-1, array.shape[0]):
            return None
        rows = array.shape[0]
        parts.append((array.dtype, array.shape[1:]))
    return rows, tuple(parts)


def split_rows(outputs: Outputs, row_counts: Sequence[int]) -> list[Outputs] | None:
    """Each request's share of a batched call's outputs (views, not copies); None when an output is not per-row."""
    total = sum(row_counts)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        return None
    shares = []
    start = 0
    for rows in row_counts:
        shares.append({name: array[start : start + rows] for name, array in outputs.items()})
        start += rows
    return shares


class _Request:
    """One queued request; ``key`` is None when it must run alone."""

    __slots__ = (
        "abandoned",
        "batch_size",
        "deadline",
        "enqueued_at",
        "finished_at",
        "future",
        "inputs",
        "key",
        "loop",
        "rows",
        "signature",
        "started_at",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        signature: SignatureSpec,
        inputs: Mapping[str, np.ndarray],
        merge: tuple[int, MergeKey] | None,
        deadline: float | None,
        enqueued_at: float,
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[Outputs] = loop.create_future()
        self.signature = signature
        self.inputs = inputs
        self.rows: int = merge[0] if merge is not None else 0
        self.key: MergeKey | None = merge[1] if merge is not None else None
        self.deadline = deadline
        self.enqueued_at = enqueued_at
        # Set by the inference thread when the request's batch runs; a request trace records them as spans.
        self.started_at = 0.0
        self.finished_at = 0.0
        self.batch_size = 0
        # Set on the event loop when the caller stops waiting; the inference thread then skips the request.
        self.abandoned = False


@dataclass
class _Pick:
    """What the inference thread would take from the queue right now."""

    batch: list[_Request] = field(default_factory=list)
    expired: list[_Request] = field(default_factory=list)
    # Taken requests in queue order, so that a prefix can be popped without rebuilding the queue.
    taken: list[_Request] = field(default_factory=list)
    # No later request can join: the batch is at max rows, or the signature's next request does not fit.
    full: bool = False


def company_wait(
    *,
    requests: int,
    full: bool,
    closing: bool,
    head_enqueued_at: float,
    last_finished: float,
    company_expected: bool,
    timeout_s: float,
    now: float,
) -> float:
    """Seconds the head of a pick of ``requests`` waits for more before it runs; 0 or less means run now.

    The rules of the module docstring as pure logic (times are the batcher's clock), so they are tested without
    a thread or a real wait."""
    if requests == 0 or full or closing:
        return 0.0
    if requests == 1:
        idle = head_enqueued_at - last_finished
        if idle > timeout_s or not company_expected:
            return 0.0
    return head_enqueued_at + timeout_s - now


def company_expected_after(requests: int, waited: bool, expected: bool) -> bool:
    """Whether a lone request should wait next time, after a pick of ``requests`` that ``waited`` (or not)."""
    if requests > 1:
        return True
    if waited:
        return False  # the wait drew no company
    return expected


def _settle(answers: list[tuple[asyncio.Future[Outputs], Outcome]]) -> None:
    """Complete futures on their event loop; one already done (deadline, cancelled caller) keeps its answer."""
    for future, outcome in answers:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _expire(future: asyncio.Future[Outputs], message: str) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded(message))


class Batcher:
    """The queue and inference thread of one loaded model version. ``close()`` drains it and stops the thread."""

    def __init__(
        self,
        servable: Servable,
        settings: BatchingSettings,
        metrics: Metrics,
        model: str,
        version: str,
        drift: DriftMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._servable = servable
        # Every time the batcher reads or compares (arrivals, deadlines, idleness); tests inject a fake one.
        self._clock = clock
        self._name = f"model {quote(model)} version {version}"
        self._deadline_message = f"request deadline passed while waiting for {self._name}"
        self._max_rows = settings.max_batch_size
        self._timeout_s = settings.batch_timeout_us / 1e6
        self._max_queue = settings.max_queue
        self._retry_after_s = settings.retry_after_s
        # Decided once per version, before serving: which signatures may merge, and their input order for keys.
        self._verdicts = decide(servable.run, servable.signatures, settings)
        log_verdicts(self._name, self._verdicts)
        self._mergeable = {
            name: tuple(servable.signatures[name].inputs) for name, verdict in self._verdicts.items() if verdict.merge
        }
        self._merged_gauge = metrics.batching_merged
        self._labels = (model, version)
        for name, verdict in self._verdicts.items():
            self._merged_gauge.labels(model, version, name, verdict.basis).set(float(verdict.merge))
        self._dropped = {reason: metrics.requests_dropped.labels(model, version, reason) for reason in _DROPS}
        self._batch_size = metrics.batch_size.labels(model, version)
        self._queue_depth = metrics.queue_depth.labels(model, version)
        self._queue_wait = metrics.queue_wait.labels(model, version)
        self._inference_duration = metrics.inference_duration.labels(model, version)
        metrics.queue_capacity.labels(model, version).set(self._max_queue)
        self._drift = drift

        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Request] = deque()
        self._closing = False
        # Owned by the inference thread. A new version counts as idle for ever: its first lone request never waits.
        self._last_finished = float("-inf")
        self._company_expected = True
        self._thread = threading.Thread(target=self._serve, name=f"rtserve-infer-{model}-{version}", daemon=True)
        self._thread.start()

    @property
    def merging(self) -> Mapping[str, Verdict]:
        """Each signature's batching verdict, for status."""
        return dict(self._verdicts)

    # -- the event loop's side ------------------------------------------------------------------------------

    async def submit(
        self, signature: SignatureSpec, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> Outputs:
        """Run validated inputs in the version's next batch. ``deadline`` is a value of the batcher's clock
        (time.monotonic() unless a test injects one): past it the caller gets DeadlineExceeded, and a request still
        queued is dropped without running."""
        now = self._clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"request deadline passed before it was queued for {self._name}")
        input_names = self._mergeable.get(signature.name)
        merge = merge_key(input_names, inputs) if input_names is not None else None
        request = _Request(asyncio.get_running_loop(), signature, inputs, merge, deadline, now)
        self._enqueue(request)
        # One coroutine per request, and a timer only for a request with a deadline (none unless the client sends
        # one or RTSERVE_REQUEST_TIMEOUT_S is set).
        timer = None
        if deadline is not None:
            timer = request.loop.call_later(deadline - self._clock(), _expire, request.future, self._deadline_message)
        try:
            return await request.future
        except DeadlineExceeded:
            self._abandon(request, _DEADLINE)
            raise
        except asyncio.CancelledError:  # the caller went away (a closed client connection)
            self._abandon(request, _CANCELLED)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if request.batch_size and (trace := CURRENT_TRACE.get()) is not None:
                trace.record_batch(request.enqueued_at, request.started_at, request.finished_at, request.batch_size)

    def _abandon(self, request: _Request, reason: str) -> None:
        """Nobody waits for the request any more: take it out of the queue, or have the thread skip it."""
        with self._cond:
            request.abandoned = True
            try:
                self._queue.remove(request)
            except ValueError:
                return  # already taken: running, or skipped by the thread when its batch starts
            self._queue_depth.set(len(self._queue))
        self._dropped[reason].inc()

    def _enqueue(self, request: _Request) -> None:
        with self._cond:
            if self._closing:
                raise Unavailable(f"{self._name} is being unloaded; retry")
            if len(self._queue) >= self._max_queue:
                raise Overloaded(
                    f"{self._name} is overloaded: {self._max_queue} requests are queued; retry later",
                    self._retry_after_s,
                )
            self._queue.append(request)
            self._queue_depth.set(len(self._queue))
            self._cond.notify()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def close(self, timeout_s: float = 30.0) -> None:
        """Refuse new requests, run every queued one, stop the thread. Whatever is still queued when the thread
        does not finish in time is failed, so that no caller waits for ever."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        with self._cond:
            stranded = list(self._queue)
            self._queue.clear()
            self._queue_depth.set(0)
        if stranded:
            log.warning(
                "%s: inference thread still busy after %.0fs; failing %d queued requests",
                self._name,
                timeout_s,
                len(stranded),
            )
            error = f"{self._name} was unloaded before this request ran; retry"
            self._answer(stranded, [Unavailable(error) for _ in stranded])
        for name, verdict in self._verdicts.items():  # an unloaded version's verdicts leave /metrics with it
            self._merged_gauge.remove(*self._labels, name, verdict.basis)

    # -- the inference thread -------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            pick = self._next_pick()
            if pick is None:
                return
            if pick.expired:
                self._answer(pick.expired, [DeadlineExceeded(self._deadline_message) for _ in pick.expired])
            if pick.batch:
                self._execute(pick.batch)

    def _next_pick(self) -> _Pick | None:
        """Block until there is work, wait for company as the rules say, and take it; None once closed and empty."""
        waited = False
        with self._cond:
            while True:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return None
                now = self._clock()
                pick = self._collect(now)
                wait = self._wait_for_company(pick, now)
                if wait <= 0:
                    break
                waited = True
                self._cond.wait(wait)
            self._take(pick.taken)
        self._company_expected = company_expected_after(len(pick.batch), waited, self._company_expected)
        return pick

    def _collect(self, now: float) -> _Pick:
        """The batch the head request would run in: later requests of its signature, in order, while they fit."""
        pick = _Pick()
        head: _Request | None = None
        rows = 0
        for request in self._queue:
            if request.deadline is not None and request.deadline <= now:
                pick.expired.append(request)
                pick.taken.append(request)
                self._dropped[_DEADLINE].inc()
                continue
            if head is None:
                head, rows = request, request.rows
                pick.full = head.key is None or rows >= self._max_rows
            elif request.signature.name != head.signature.name:
                continue  # other signatures keep their place in the queue
            elif request.key == head.key and rows + request.rows <= self._max_rows:
                rows += request.rows
                pick.full = rows >= self._max_rows
            else:  # FIFO per signature: nothing may overtake a request that does not fit
                pick.full = True
                break
            pick.batch.append(request)
            pick.taken.append(request)
            if pick.full:
                break
        return pick

    def _wait_for_company(self, pick: _Pick, now: float) -> float:
        """Seconds to wait for more requests before running ``pick``; 0 or less means run now."""
        return company_wait(
            requests=len(pick.batch),
            full=pick.full,
            closing=self._closing,
            head_enqueued_at=pick.batch[0].enqueued_at if pick.batch else now,
            last_finished=self._last_finished,
            company_expected=self._company_expected,
            timeout_s=self._timeout_s,
            now=now,
        )

    def _take(self, taken: list[_Request]) -> None:
        queue = self._queue
        if all(queued is request for queued, request in zip(queue, taken, strict=False)):
            for _ in taken:
                queue.popleft()
        else:
            chosen = {id(request) for request in taken}
            self._queue = deque(request for request in queue if id(request) not in chosen)
        self._queue_depth.set(len(self._queue))

    def _execute(self, batch: list[_Request]) -> None:
        batch = [request for request in batch if not request.abandoned]  # went away since it was taken
        if not batch:
            return
        started = self._clock()
        for request in batch:
            self._queue_wait.observe(started - request.enqueued_at)
        self._batch_size.observe(len(batch))
        try:
            outcomes = self._run_batch(batch)
        except Exception as error:  # a bug here must fail this batch only, never the thread
            log.exception("%s: batch of %d requests failed unexpectedly", self._name, len(batch))
            outcomes = [error] * len(batch)
        finished = self._clock()
        # Recorded before the answers go out: a caller that has its answer must find the batcher already idle
        # since then (the wait rules read it), not racing this thread to set it.
        self._last_finished = finished
        for request in batch:
            request.started_at, request.finished_at, request.batch_size = started, finished, len(batch)
        self._answer(batch, outcomes)
        if self._drift is not None:
            self._observe_drift(self._drift, batch, outcomes)

    def _observe_drift(self, monitor: DriftMonitor, batch: list[_Request], outcomes: Sequence[Outcome]) -> None:
        """Count the inputs of the requests that ran the profiled signature successfully."""
        inputs = [
            request.inputs
            for request, outcome in zip(batch, outcomes, strict=True)
            if request.signature.name == monitor.signature and not isinstance(outcome, BaseException)
        ]
        try:
            monitor.observe(inputs)
        except Exception:  # monitoring must never take the inference thread down: stop it instead
            log.exception("%s: drift monitoring failed and is now off for this version", self._name)
            self._drift = None

    def _run_batch(self, batch: list[_Request]) -> list[Outcome]:
        if len(batch) == 1:  # no concatenation, no split, no copy
            return [self._call(batch[0].signature.name, batch[0].inputs)]
        signature = batch[0].signature.name
        merged = {name: np.concatenate([r.inputs[name] for r in batch]) for name in self._mergeable[signature]}
        outcome = self._call(signature, merged)
        if isinstance(outcome, BaseException):
            # Whatever failed (bad data, memory, a model that breaks on some values), it may be one request's
            # doing: rerun them one by one so only that request fails, and its message (which may quote its
            # values) reaches no other client.
            return self._run_each(batch)
        shares = split_rows(outcome, [r.rows for r in batch])
        if shares is None:
            return self._not_splittable(signature, batch)
        return list(shares)

    def _not_splittable(self, signature: str, batch: list[_Request]) -> list[Outcome]:
        """Outputs without a per-row first dimension: stop merging this signature and run the batch one by one."""
        if self._mergeable.pop(signature, None) is not None:
            log.warning(
                "%s: signature %s returns outputs that do not split by rows; it runs unbatched from now on",
                self._name,
                quote(signature),
            )
            before = self._verdicts[signature]
            self._verdicts[signature] = Verdict(False, UNSAFE, "its outputs did not split by rows in a merged call")
            self._merged_gauge.remove(*self._labels, signature, before.basis)
            self._merged_gauge.labels(*self._labels, signature, UNSAFE).set(0.0)
        return self._run_each(batch)

    def _run_each(self, batch: list[_Request]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for request in batch:
            if request.abandoned or (request.deadline is not None and request.deadline <= self._clock()):
                outcomes.append(DeadlineExceeded(self._deadline_message))  # nobody waits for it: do not run it
            else:
                outcomes.append(self._call(request.signature.name, request.inputs))
        return outcomes

    def _call(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Outcome:
        started = time.perf_counter()
        try:
            return self._servable.run(signature, inputs)
        except Exception as error:  # handed to the waiting callers; InvalidArgument stays InvalidArgument
            return error
        finally:
            self._inference_duration.observe(time.perf_counter() - started)

    @staticmethod
    def _answer(requests: Sequence[_Request], outcomes: Sequence[Outcome]) -> None:
        """One thread-safe call per event loop for the whole batch, in queue order."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outputs], Outcome]]] = {}
        for request, outcome in zip(requests, outcomes, strict=True):
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # the loop is closed: nobody is waiting for these answers any more
                log.debug("dropping %d answers for a closed event loop", len(answers))
