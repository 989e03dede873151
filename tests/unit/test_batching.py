"""The adaptive batcher's semantics, on a fake model that records every call (no TensorFlow).

Tests that need requests to pile up hold the model inside a call (``model.hold()``): while the inference thread is
busy, everything submitted queues, so which requests share a call is deterministic. Timing assertions only bound
waits that the rules say must happen (lower bounds) or must not (upper bounds far below the configured timeout).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from service import batching
from service.batch_safety import mergeable_signature
from service.batching import Batcher, company_expected_after, company_wait, merge_key, split_rows
from service.errors import DeadlineExceeded, Internal, InvalidArgument, Overloaded, Unavailable
from service.observability.metrics import Metrics
from service.settings import BatchingSettings, Settings
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")
LABELS = {"model_name": "m", "model_version": "1"}


def signature(name: str, inputs: Mapping[str, tuple[int, ...] | None], outputs: Mapping[str, Any]) -> SignatureSpec:
    def specs(shapes: Mapping[str, tuple[int, ...] | None]) -> dict[str, TensorSpec]:
        return {key: TensorSpec(key, FLOAT, shape) for key, shape in shapes.items()}

    return SignatureSpec(name, PREDICT_METHOD, specs(inputs), specs(outputs))


DOUBLE = signature("double", {"x": (-1, -1)}, {"y": (-1, -1)})  # y = 2x
OTHER = signature("other", {"x": (-1, -1)}, {"y": (-1, -1)})  # y = x + 100
TOTAL = signature("total", {"x": (-1, 2)}, {"sum": None})  # one number per call: does not split by rows
SCALAR = signature("scalar", {"x": ()}, {"y": ()})  # no batch dimension
PAIR = signature("pair", {"a": (-1, 2), "b": (-1,)}, {"y": (-1,)})  # y = a.sum(1) + b
SIGNATURES = {s.name: s for s in (DOUBLE, OTHER, TOTAL, SCALAR, PAIR)}


class RecordingModel:
    """A servable whose calls are recorded. A value of 13 fails the call (Internal); a negative value is bad
    input (InvalidArgument), as TensorFlow reports it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, np.ndarray]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.closed = False

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return SIGNATURES

    def hold(self) -> None:
        """Block the next calls inside the model until ``release()``."""
        self.entered.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((name, inputs))
        self.entered.set()
        assert self.gate.wait(10), "the test never released the model"
        return self.compute(name, inputs)

    def compute(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = np.concatenate([array.ravel() for array in inputs.values()])
        if (values == 13).any():
            raise Internal("the model failed on 13")
        if (values < 0).any():
            raise InvalidArgument(f"negative value {values.min()}")
        if name == "double":
            return {"y": inputs["x"] * 2}
        if name == "other":
            return {"y": inputs["x"] + 100}
        if name == "total":
            return {"sum": np.array([inputs["x"].sum()], np.float32)}
        if name == "pair":
            return {"y": inputs["a"].sum(axis=1) + inputs["b"]}
        return {"y": inputs["x"] * 2}

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def call_rows(self, name: str = "double") -> list[list[float]]:
        """The first column of ``x`` in every call of a signature: which requests each call merged."""
        return [inputs["x"][:, 0].tolist() for called, inputs in self.calls if called == name]


SOFTMAX = signature("softmax", {"x": (-1, -1)}, {"y": (-1, -1)})  # over the batch axis: rows depend on each other


class MixingModel(RecordingModel):
    """``softmax`` normalises over the rows of the call, ``double`` is row-wise; no value is refused."""

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return {"softmax": SOFTMAX, "double": DOUBLE}

    def compute(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name == "softmax":
            exp = np.exp(inputs["x"])
            return {"y": exp / exp.sum(axis=0)}
        return {"y": inputs["x"] * 2}


def rows(*values: float, width: int = 2) -> np.ndarray:
    """One row per value, every column holding that value (so requests are told apart by their values)."""
    return np.repeat(np.array(values, np.float32)[:, None], width, axis=1)


class Harness:
    """A batcher over a RecordingModel, with its metrics registry. Merging is forced on unless a test says
    otherwise: these tests are about the queue, and the recording model refuses the load-time check's inputs."""

    def __init__(
        self, model: RecordingModel | None = None, clock: Callable[[], float] = time.monotonic, **settings: Any
    ) -> None:
        self.model = model or RecordingModel()
        self.registry = CollectorRegistry()
        batching = BatchingSettings(**{"merge": "on", **settings})
        self.batcher = Batcher(self.model, batching, Metrics(self.registry), "m", "1", clock=clock)

    def submit(
        self, x: np.ndarray, spec: SignatureSpec = DOUBLE, deadline: float | None = None
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        return asyncio.ensure_future(self.batcher.submit(spec, {"x": x}, deadline))

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name, LABELS) or 0.0

    async def held(self) -> asyncio.Future[dict[str, np.ndarray]]:
        """Occupy the inference thread with a request of value 0 until ``model.release()``."""
        self.model.hold()
        first = self.submit(rows(0))
        assert await asyncio.to_thread(self.model.entered.wait, 5), "the first request never reached the model"
        return first

    async def queued(self, count: int) -> None:
        """Let submitted tasks run up to their enqueue, and check that ``count`` requests are waiting."""
        for _ in range(1000):
            if self.metric("rtserve_queue_depth") == count:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"queue depth {self.metric('rtserve_queue_depth')}, expected {count}")


@pytest.fixture
def harness_factory() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        settings.setdefault("batch_timeout_us", 0)
        made.append(Harness(**settings))
        return made[-1]

    yield make
    for harness in made:
        harness.model.release()
        harness.batcher.close(5)


class FakeClock:
    """The batcher's clock, moved by the test: no test waits for real time to pass."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the pure helpers ----------------------------------------------------------------------------------------


def test_only_signatures_batched_on_every_input_and_output_merge() -> None:
    assert mergeable_signature(DOUBLE)
    assert mergeable_signature(TOTAL)  # unknown-rank output: checked when a call returns
    assert not mergeable_signature(SCALAR)
    assert not mergeable_signature(signature("fixed", {"x": (-1, 2)}, {"y": (3,)}))
    assert not mergeable_signature(signature("partly", {"x": (-1, 2), "z": (2,)}, {"y": (-1,)}))


def test_merge_key_needs_one_row_count_across_inputs() -> None:
    a = np.zeros((3, 2), np.float32)
    key = merge_key(("a", "b"), {"a": a, "b": np.zeros(3, np.float32)})
    assert key == (3, ((np.dtype(np.float32), (2,)), (np.dtype(np.float32), ())))
    assert merge_key(("a", "b"), {"a": a, "b": np.zeros(4, np.float32)}) is None
    assert merge_key(("a",), {"a": np.zeros((), np.float32)}) is None
    # Different trailing shapes or dtypes give different keys, so they never concatenate.
    assert merge_key(("a",), {"a": a}) != merge_key(("a",), {"a": np.zeros((3, 3), np.float32)})
    assert merge_key(("a",), {"a": a}) != merge_key(("a",), {"a": a.astype(np.float64)})


def test_split_rows_returns_views_or_none() -> None:
    outputs = {"y": np.arange(10).reshape(5, 2), "z": np.arange(5)}
    shares = split_rows(outputs, [2, 0, 3])
    assert shares is not None
    assert [share["y"].shape[0] for share in shares] == [2, 0, 3]
    assert shares[2]["z"].tolist() == [2, 3, 4]
    assert np.shares_memory(shares[0]["y"], outputs["y"])  # views: splitting copies nothing
    assert split_rows({"y": np.arange(4)}, [2, 3]) is None
    assert split_rows({"y": np.zeros((), np.float32)}, [1]) is None


# -- batching --------------------------------------------------------------------------------------------------


def test_a_single_request_is_passed_through_without_a_copy(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()
    x = rows(1.0, 2.0)

    async def scenario() -> None:
        result = await harness.submit(x)
        assert result["y"].tolist() == (x * 2).tolist()

    asyncio.run(scenario())
    assert harness.model.calls[0][1]["x"] is x


def test_queued_requests_coalesce_and_each_gets_its_own_rows(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_batch_size=64)

    async def scenario() -> None:
        first = await harness.held()
        inputs = [rows(*[float(1000 + i * 10 + j) for j in range(1 + i % 3)]) for i in range(20)]
        tasks = [harness.submit(x) for x in inputs]
        await harness.queued(20)
        harness.model.release()
        results = await asyncio.gather(*tasks)
        await first
        for x, result in zip(inputs, results, strict=True):
            assert result["y"].tolist() == (x * 2).tolist()

    asyncio.run(scenario())
    assert len(harness.model.calls) == 2  # the held request, then all twenty in one call
    assert harness.metric("rtserve_batch_size_count") == 2
    assert harness.metric("rtserve_batch_size_sum") == 21
    assert harness.metric("rtserve_queue_wait_seconds_count") == 21
    assert harness.metric("rtserve_inference_duration_seconds_count") == 2
    assert harness.metric("rtserve_queue_depth") == 0


def test_concurrent_submits_share_calls(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_batch_size=64, batch_timeout_us=50_000)

    async def scenario() -> None:
        inputs = [rows(float(i + 20)) for i in range(20)]
        results = await asyncio.gather(*(harness.submit(x) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            assert result["y"].tolist() == (x * 2).tolist()

    asyncio.run(scenario())
    assert len(harness.model.calls) < 20


def test_batches_stop_at_max_rows_and_big_requests_run_alone(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_batch_size=4)

    async def scenario() -> None:
        first = await harness.held()
        sizes = {1.0: 3, 2.0: 2, 3.0: 1, 4.0: 6, 5.0: 1}
        tasks = [harness.submit(rows(*[value] * count)) for value, count in sizes.items()]
        await harness.queued(5)
        harness.model.release()
        for (value, count), result in zip(sizes.items(), await asyncio.gather(*tasks), strict=True):
            assert result["y"].tolist() == [[value * 2] * 2] * count
        await first

    asyncio.run(scenario())
    # 3 rows + 2 would pass 4: the 3-row request goes alone; the 6-row one exceeds the limit by itself.
    assert harness.model.call_rows() == [[0], [1, 1, 1], [2, 2, 3], [4] * 6, [5]]


def test_fifo_per_signature_and_other_signatures_keep_their_place(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_batch_size=32)
    finished: list[str] = []

    async def scenario() -> None:
        first = await harness.held()
        plan = [("b1", OTHER, 2), ("a1", DOUBLE, 2), ("a2", DOUBLE, 3), ("a3", DOUBLE, 2), ("b2", OTHER, 2)]
        tasks = []
        for index, (label, spec, width) in enumerate(plan):
            task = harness.submit(rows(float(index + 1), width=width), spec)
            task.add_done_callback(lambda _, label=label: finished.append(label))
            tasks.append(task)
        await harness.queued(5)
        harness.model.release()
        await asyncio.gather(first, *tasks)

    asyncio.run(scenario())
    # a3 could join a1 (same width) but may not overtake a2, which cannot (3 columns).
    assert [(name, inputs["x"][:, 0].tolist()) for name, inputs in harness.model.calls[1:]] == [
        ("other", [1.0, 5.0]),
        ("double", [2.0]),
        ("double", [3.0]),
        ("double", [4.0]),
    ]
    assert [label for label in finished if label.startswith("a")] == ["a1", "a2", "a3"]
    assert [label for label in finished if label.startswith("b")] == ["b1", "b2"]


def test_signatures_without_a_batch_dimension_run_alone(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(np.array(float(i), np.float32), SCALAR) for i in (1, 2)]
        await harness.queued(2)
        harness.model.release()
        assert [float(r["y"]) for r in await asyncio.gather(*tasks)] == [2.0, 4.0]
        await first

    asyncio.run(scenario())
    assert len(harness.model.calls) == 3


def test_disabled_batching_still_serves_one_call_per_request(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(enabled=False, batch_timeout_us=1_000_000)

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(float(i))) for i in (1, 2, 3)]
        await harness.queued(3)
        harness.model.release()
        await asyncio.gather(first, *tasks)

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [1], [2], [3]]


def test_multi_input_requests_merge_and_split(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        inputs = [{"a": rows(float(i), float(i)), "b": np.array([i, i + 0.5], np.float32)} for i in (1, 2)]
        tasks = [asyncio.ensure_future(harness.batcher.submit(PAIR, x)) for x in inputs]
        await harness.queued(2)
        harness.model.release()
        results = await asyncio.gather(*tasks)
        assert [r["y"].tolist() for r in results] == [[3.0, 3.5], [6.0, 6.5]]
        await first

    asyncio.run(scenario())
    assert [name for name, _ in harness.model.calls] == ["double", "pair"]


def test_outputs_that_do_not_split_fall_back_to_one_call_per_request(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory()

    async def run_two() -> list[float]:
        first = await harness.held()
        tasks = [harness.submit(rows(value), TOTAL) for value in (1.0, 2.0)]
        await harness.queued(2)
        harness.model.release()
        await first
        return [float(result["sum"][0]) for result in await asyncio.gather(*tasks)]

    assert asyncio.run(run_two()) == [2.0, 4.0]  # each request's own sum, not the batch's
    assert [len(inputs["x"]) for name, inputs in harness.model.calls if name == "total"] == [2, 1, 1]
    harness.model.calls.clear()
    assert asyncio.run(run_two()) == [2.0, 4.0]
    assert [len(inputs["x"]) for name, inputs in harness.model.calls if name == "total"] == [1, 1]  # no retry


# -- waiting for company ---------------------------------------------------------------------------------------


def test_a_lone_request_on_an_idle_version_does_not_wait(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(batch_timeout_us=5_000_000, clock=FakeClock())

    async def scenario() -> None:
        await asyncio.wait_for(harness.submit(rows(1)), 5)  # a new version counts as idle: the stopped clock says so

    asyncio.run(scenario())


def test_idle_longer_than_the_timeout_means_no_wait(harness_factory: Callable[..., Harness]) -> None:
    clock = FakeClock()
    harness = harness_factory(max_batch_size=2, batch_timeout_us=1_000_000, clock=clock)

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(value)) for value in (1, 2)]
        await harness.queued(2)
        harness.model.release()
        await asyncio.gather(first, *tasks)  # a call of two: the batcher now expects company
        clock.now += 1.2  # idle for longer than the timeout
        # A wrong wait never ends on the stopped clock (each timed wait is recomputed from it): wait_for turns it
        # into a failure, with no bound on real time that a busy machine could break.
        await asyncio.wait_for(harness.submit(rows(3)), 5)

    asyncio.run(scenario())


def test_waiting_for_company_until_full_then_timeout_then_not_again(harness_factory: Callable[..., Harness]) -> None:
    # On a stopped clock every wait lasts until the test moves it: whether a request waited is a fact of the
    # clock, not of how fast a busy machine ran. A wrong wait never ends and wait_for turns it into a failure.
    clock = FakeClock()
    harness = harness_factory(max_batch_size=2, batch_timeout_us=1_000_000, clock=clock)

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(value)) for value in (1, 2)]
        await harness.queued(2)
        harness.model.release()
        await asyncio.gather(first, *tasks)
        # Busy a moment ago: a lone request waits for company, and runs as soon as the batch is full.
        waiting = harness.submit(rows(3))
        await harness.queued(1)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await asyncio.wait_for(asyncio.gather(waiting, harness.submit(rows(4))), 5)
        # Nobody comes: it runs when the timeout (measured from its arrival) is up, and not before.
        lone = harness.submit(rows(5))
        await harness.queued(1)
        clock.now += 0.9
        await asyncio.sleep(0.05)
        assert not lone.done()
        clock.now += 0.2
        await asyncio.wait_for(lone, 5)
        # That wait drew no company, so the next lone request does not wait again.
        await asyncio.wait_for(harness.submit(rows(6)), 5)

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [1, 2], [3, 4], [5], [6]]


# The wait policy as pure logic: (requests picked, full, closing, head arrival, last finish, company expected).
TIMEOUT_S = 1.0


def wait(
    requests: int = 1,
    full: bool = False,
    closing: bool = False,
    arrived: float = 100.0,
    last_finished: float = 99.5,
    expected: bool = True,
    now: float = 100.25,
) -> float:
    return company_wait(
        requests=requests,
        full=full,
        closing=closing,
        head_enqueued_at=arrived,
        last_finished=last_finished,
        company_expected=expected,
        timeout_s=TIMEOUT_S,
        now=now,
    )


def test_a_lone_request_right_after_a_batch_waits_the_rest_of_its_timeout() -> None:
    assert wait() == 0.75  # arrived 0.25 s ago, the timeout counts from its arrival
    assert wait(now=101.5) <= 0  # its timeout is up


def test_nothing_waits_when_full_closing_or_empty() -> None:
    assert wait(full=True) == 0.0
    assert wait(closing=True) == 0.0
    assert wait(requests=0) == 0.0


def test_a_lone_request_after_an_idle_spell_or_a_fruitless_wait_runs_at_once() -> None:
    assert wait(last_finished=100.0 - TIMEOUT_S - 0.01) == 0.0  # idle for longer than the timeout
    assert wait(last_finished=float("-inf")) == 0.0  # a new version has never been busy
    assert wait(expected=False) == 0.0  # the last wait drew no company
    assert wait(last_finished=100.0 - TIMEOUT_S) == 0.75  # idle for exactly the timeout: still waits


def test_several_requests_wait_for_a_full_batch_whatever_the_idle_time() -> None:
    assert wait(requests=2, last_finished=float("-inf"), expected=False) == 0.75


def test_company_is_expected_again_after_a_batch_and_not_after_a_fruitless_wait() -> None:
    assert company_expected_after(2, waited=True, expected=False) is True
    assert company_expected_after(2, waited=False, expected=False) is True
    assert company_expected_after(1, waited=True, expected=True) is False
    assert company_expected_after(1, waited=False, expected=True) is True
    assert company_expected_after(1, waited=False, expected=False) is False


# -- refusals, deadlines, failures -----------------------------------------------------------------------------


def test_only_a_request_with_a_deadline_schedules_a_timer(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()
    timers: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def counted(delay: float, *args: Any) -> asyncio.TimerHandle:
            timers.append(delay)
            return call_later(delay, *args)

        loop.call_later = counted  # type: ignore[method-assign]
        await harness.submit(rows(1))
        assert timers == []  # no deadline, no timer: the common case pays none
        await harness.submit(rows(2), deadline=time.monotonic() + 60)
        assert len(timers) == 1 and 0 < timers[0] <= 60

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_with_retry_after(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_queue=2, retry_after_s=3)

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(value)) for value in (1, 2)]
        await harness.queued(2)
        with pytest.raises(Overloaded) as refused:
            await harness.batcher.submit(DOUBLE, {"x": rows(3)}, None)
        assert refused.value.retry_after_s == 3
        assert "2 requests are queued" in refused.value.message
        harness.model.release()
        await asyncio.gather(first, *tasks)

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [1, 2]]


def test_a_deadline_passing_in_the_queue_answers_at_once_and_never_runs(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        doomed = harness.submit(rows(1), deadline=time.monotonic() + 0.1)
        kept = harness.submit(rows(2), deadline=time.monotonic() + 60)
        await harness.queued(2)
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await asyncio.wait_for(doomed, 5)  # answered while the model is still held
        with pytest.raises(DeadlineExceeded, match="before it was queued"):
            await harness.batcher.submit(DOUBLE, {"x": rows(3)}, time.monotonic() - 1)
        harness.model.release()
        assert (await kept)["y"].tolist() == [[4.0, 4.0]]
        await first

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [2]]


def test_a_deadline_passing_during_the_call_is_the_only_answer(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()
    loop_errors: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
        harness.model.hold()
        doomed = harness.submit(rows(1), deadline=time.monotonic() + 0.1)
        assert await asyncio.to_thread(harness.model.entered.wait, 5)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(doomed, 5)
        harness.model.release()
        # Answers are settled in order on the loop: once this one is back, the late result was handed over too.
        assert (await harness.submit(rows(2)))["y"].tolist() == [[4.0, 4.0]]

    asyncio.run(scenario())
    assert loop_errors == []


def test_a_merged_call_failing_with_any_error_fails_only_the_culprit(harness_factory: Callable[..., Harness]) -> None:
    """Not only INVALID_ARGUMENT: an INTERNAL failure of a merged call is rerun request by request."""
    harness = harness_factory(max_batch_size=2)

    async def scenario() -> None:
        first = await harness.held()
        culprit, innocent = (harness.submit(rows(value)) for value in (13, 1))
        after = harness.submit(rows(2))
        await harness.queued(3)
        harness.model.release()
        with pytest.raises(Internal, match="failed on 13"):
            await culprit
        assert (await innocent)["y"].tolist() == [[2.0, 2.0]]
        assert (await after)["y"].tolist() == [[4.0, 4.0]]
        assert (await first)["y"].tolist() == [[0.0, 0.0]]

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [13, 1], [13], [1], [2]]


def test_bad_input_in_a_batch_fails_only_the_request_that_sent_it(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(value)) for value in (1, -7, 2)]
        await harness.queued(3)
        harness.model.release()
        good, bad, other = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(bad, InvalidArgument)
        assert bad.message == "negative value -7.0"
        assert not isinstance(good, BaseException) and good["y"].tolist() == [[2.0, 2.0]]
        assert not isinstance(other, BaseException) and other["y"].tolist() == [[4.0, 4.0]]
        await first

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [1, -7, 2], [1], [-7], [2]]


def test_no_request_is_lost_or_answered_twice(
    harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[asyncio.Future[Any]] = []  # the futures themselves, so that no id is reused
    original = batching._settle

    def counting_settle(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
        settled.extend(future for future, _ in answers)
        original(answers)

    monkeypatch.setattr(batching, "_settle", counting_settle)
    rng = random.Random(4)
    harness = harness_factory(max_batch_size=8, batch_timeout_us=2_000, max_queue=16)
    counts = {"ok": 0, "overloaded": 0, "deadline": 0, "failed": 0}

    async def client(number: int) -> None:
        for step in range(25):
            await asyncio.sleep(rng.random() * 0.002)
            value = float(1000 + number * 100 + step)
            if rng.random() < 0.05:
                value = 13.0
            spec = DOUBLE if rng.random() < 0.8 else OTHER
            x = rows(*[value] * rng.randint(1, 4), width=rng.choice((2, 2, 3)))
            deadline = time.monotonic() + 0.003 if rng.random() < 0.1 else None
            try:
                result = await harness.batcher.submit(spec, {"x": x}, deadline)
            except Overloaded:
                counts["overloaded"] += 1
            except DeadlineExceeded:
                counts["deadline"] += 1
            except Internal:  # a 13 fails its own request
                counts["failed"] += 1
            else:
                expected = x * 2 if spec is DOUBLE else x + 100
                assert result["y"].tolist() == expected.tolist()
                counts["ok"] += 1

    async def scenario() -> None:
        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(24))), 60)

    asyncio.run(scenario())
    assert sum(counts.values()) == 24 * 25
    assert counts["ok"] > 300
    assert len(settled) == len({id(future) for future in settled}), "a request was answered twice"
    assert harness.metric("rtserve_queue_depth") == 0
    assert harness.metric("rtserve_batch_size_count") < harness.metric("rtserve_batch_size_sum")  # some merged


# -- closing -----------------------------------------------------------------------------------------------------


def test_close_runs_what_is_queued_then_refuses(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(max_batch_size=1)

    async def scenario() -> None:
        first = await harness.held()
        tasks = [harness.submit(rows(value)) for value in (1, 2)]
        await harness.queued(2)
        closing = asyncio.ensure_future(asyncio.to_thread(harness.batcher.close, 10))
        await asyncio.sleep(0.05)
        assert not closing.done()
        with pytest.raises(Unavailable, match="being unloaded"):
            await harness.batcher.submit(DOUBLE, {"x": rows(3)}, None)
        harness.model.release()
        await closing
        assert [(await task)["y"].tolist() for task in tasks] == [[[2.0, 2.0]], [[4.0, 4.0]]]
        await first

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [1], [2]]


def test_close_fails_queued_requests_when_the_model_does_not_return(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        queued = harness.submit(rows(1))
        await harness.queued(1)
        await asyncio.to_thread(harness.batcher.close, 0.2)
        with pytest.raises(Unavailable, match="unloaded before this request ran"):
            await asyncio.wait_for(queued, 5)
        harness.model.release()
        assert (await asyncio.wait_for(first, 5))["y"].tolist() == [[0.0, 0.0]]

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0]]


# -- settings ----------------------------------------------------------------------------------------------------


def test_batching_settings_from_the_environment_with_per_model_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_BATCHING__MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("RTSERVE_BATCHING__OVERRIDES", '{"iris": {"max_batch_size": 64, "enabled": false}}')
    settings = Settings().batching
    assert (settings.enabled, settings.max_batch_size, settings.batch_timeout_us, settings.max_queue) == (
        True,
        8,
        1000,
        256,
    )
    iris = settings.for_model("iris")
    assert (iris.enabled, iris.max_batch_size, iris.batch_timeout_us) == (False, 64, 1000)
    assert settings.for_model("other").max_batch_size == 8
    assert settings.warm_up_sizes() == (1, 2, 4, 8)
    assert iris.warm_up_sizes() == (1,)  # unbatched: only single requests reach the model
    assert BatchingSettings(max_batch_size=24).warm_up_sizes() == (1, 2, 4, 8, 16, 24)


def test_a_misspelt_override_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_BATCHING__OVERRIDES", '{"iris": {"max_batch": 64}}')
    with pytest.raises(ValidationError, match="max_batch"):
        Settings()


# -- which signatures merge, and work nobody waits for -----------------------------------------------------------


def test_by_default_only_signatures_found_row_safe_merge(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(model=MixingModel(), merge="auto")
    assert {name: (v.merge, v.basis) for name, v in harness.batcher.merging.items()} == {
        "softmax": (False, "unsafe"),
        "double": (True, "safe"),
    }
    labels = {**LABELS, "signature": "softmax", "basis": "unsafe"}
    assert harness.registry.get_sample_value("rtserve_batching_merged", labels) == 0.0
    labels = {**LABELS, "signature": "double", "basis": "safe"}
    assert harness.registry.get_sample_value("rtserve_batching_merged", labels) == 1.0
    harness.model.calls.clear()  # the load-time check's calls
    inputs = [rows(float(value)) for value in (1, 2, 3)]

    async def scenario() -> None:
        first = await harness.held()
        softmax = [harness.submit(x, SOFTMAX) for x in inputs]
        double = [harness.submit(x) for x in inputs]
        await harness.queued(6)
        harness.model.release()
        await first
        for result in await asyncio.gather(*softmax):
            assert result["y"].tolist() == [[1.0, 1.0]]  # each request answered as if alone
        assert [r["y"].tolist() for r in await asyncio.gather(*double)] == [[[2.0, 2.0]], [[4.0, 4.0]], [[6.0, 6.0]]]

    asyncio.run(scenario())
    assert harness.model.call_rows("softmax") == [[1], [2], [3]]  # one model call per request
    assert harness.model.call_rows("double") == [[0], [1, 2, 3]]


def test_forced_on_merges_even_a_mixing_signature(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(model=MixingModel(), merge="auto", signatures={"softmax": "on"})
    assert harness.batcher.merging["softmax"].basis == "forced_on"


def test_a_cancelled_request_leaves_the_queue_at_once_and_never_runs(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        gone = harness.submit(rows(1))
        kept = harness.submit(rows(2))
        await harness.queued(2)
        gone.cancel()  # what the fast lane does when the client disconnects
        await harness.queued(1)  # left the queue while the model is still busy
        harness.model.release()
        assert (await kept)["y"].tolist() == [[4.0, 4.0]]
        await first

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0], [2]]
    assert harness.registry.get_sample_value("rtserve_requests_dropped_total", {**LABELS, "reason": "cancelled"}) == 1


def test_a_request_cancelled_after_it_was_taken_is_skipped(harness_factory: Callable[..., Harness]) -> None:
    """The thread took it (its batch was picked) but has not started it: it still never runs."""
    harness = harness_factory()
    original = harness.batcher._execute
    taken = threading.Event()
    resume = threading.Event()

    def execute_later(batch: Any) -> None:
        taken.set()
        assert resume.wait(10)
        original(batch)

    async def scenario() -> None:
        harness.batcher._execute = execute_later  # type: ignore[method-assign]
        gone = harness.submit(rows(1))
        assert await asyncio.to_thread(taken.wait, 10)
        harness.batcher._execute = original  # type: ignore[method-assign]
        gone.cancel()
        await asyncio.sleep(0.01)  # the cancellation reaches the request
        resume.set()
        assert (await harness.submit(rows(2)))["y"].tolist() == [[4.0, 4.0]]

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[2]]


def test_a_deadline_passing_in_the_queue_is_counted_as_dropped(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()

    async def scenario() -> None:
        first = await harness.held()
        doomed = harness.submit(rows(1), deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(doomed, 5)
        await harness.queued(0)  # dropped at its deadline, not when the thread comes to it
        harness.model.release()
        await first

    asyncio.run(scenario())
    assert harness.model.call_rows() == [[0]]
    assert harness.registry.get_sample_value("rtserve_requests_dropped_total", {**LABELS, "reason": "deadline"}) == 1
