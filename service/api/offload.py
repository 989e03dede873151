"""Decoding and encoding of large bodies off the event loop, in a bounded pool of worker processes.

JSON parsers (orjson, and the stdlib's for bodies with NaN) hold the GIL for the whole of one parse: a thread
would free the event loop between calls, not during the seconds one 64 MB parse takes. Worker processes hold
their own GIL, so the loop keeps answering health, metrics and other models. What crosses the process boundary
is the body (bytes) one way and numpy arrays or the answer's bytes the other, both copied at memory speed.

Small bodies (``inline_bytes`` or less) stay inline: for them the hand-off would cost more than the work. The
pool runs at most ``workers`` jobs at once, which bounds the memory decoding may take (each job is bounded by the
codecs' limits); a request that finds every worker busy waits up to ``wait_s`` for one, then gets 503 with
Retry-After, like a full batching queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import numpy as np

from service.codecs.arrays import Limits
from service.codecs.tf_protos import protos_only
from service.errors import Overloaded, Unavailable
from service.settings import Settings

T = TypeVar("T")
# After a large request, its answer is sent and its buffers freed within this time; then the heap is trimmed.
TRIM_DELAY_S = 1.0


def _ready() -> bool:
    return True


def _trimmed(function: Callable[..., T], *args: object) -> T:
    """Run in a worker: the call, then give the freed heap back to the system. A large parse frees its
    millions of objects, but glibc keeps the pages for reuse, so a worker would hold its largest job's memory
    for good; malloc_trim returns them (the pool's memory is then that of the jobs running)."""
    try:
        return function(*args)
    finally:
        _malloc_trim()


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _release_soon(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to wait for the slot
        loop.call_soon_threadsafe(slots.release)


class Offload:
    """Where a codec call runs: inline for small sizes, else in the worker pool (one per app)."""

    def __init__(self, limits: Limits, inline_bytes: int, workers: int, wait_s: float, retry_after_s: int) -> None:
        self.limits = limits  # what decoders may build, passed with every call
        self.inline_bytes = inline_bytes
        self._workers = workers
        self._wait_s = wait_s
        self._retry_after_s = retry_after_s
        self._executor: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None  # made in the running loop, on first use
        self._trim_pending = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Offload:
        limits = Limits(settings.max_tensor_elements, settings.max_string_elements, settings.max_json_values)
        return cls(
            limits,
            settings.codec_inline_bytes,
            settings.codec_workers,
            settings.codec_wait_s,
            settings.batching.retry_after_s,
        )

    async def call(self, size: int, function: Callable[..., T], *args: object) -> T:
        """``function(*args)``: inline when ``size`` (bytes of the body or answer) is small, else in a worker.

        ``function`` and ``args`` must be picklable (module-level functions, plain data, numpy arrays)."""
        if size <= self.inline_bytes:
            return function(*args)
        loop = asyncio.get_running_loop()
        slots = self._slots_of()
        try:
            async with asyncio.timeout(self._wait_s):
                await slots.acquire()
        except TimeoutError:
            raise Overloaded(
                f"every decoding worker is busy with large requests ({self._workers}); retry", self._retry_after_s
            ) from None
        try:
            future: Future[T] = self._pool().submit(_trimmed, function, *args)
        except (BrokenProcessPool, RuntimeError):
            slots.release()
            self._reset()
            raise Unavailable("the decoding worker pool is restarting; retry") from None
        # The slot is free when the worker is, even if the request was cancelled meanwhile.
        future.add_done_callback(lambda _: _release_soon(loop, slots))
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._reset()
            raise Unavailable("a decoding worker process stopped (out of memory?); retry") from None
        finally:
            self._trim_later(loop)

    def _trim_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """This process held the large body and its arrays too (and TensorFlow's threads their copies): give the
        freed pages back once the answer is out, on a thread (trimming a large heap takes milliseconds)."""
        if self._trim_pending:
            return
        self._trim_pending = True

        def trim() -> None:
            self._trim_pending = False
            loop.run_in_executor(None, _malloc_trim)

        loop.call_later(TRIM_DELAY_S, trim)

    async def warm_up(self) -> None:
        """Start the workers now, so the first large request does not pay for it."""
        await asyncio.wrap_future(self._pool().submit(_ready))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _slots_of(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._workers)
        return self._slots

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the server process runs TensorFlow's threads, which a fork would copy half-done.
            # protos_only: the gRPC codecs read TensorFlow's messages; a worker need not load its runtime for them.
            self._executor = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn"), initializer=protos_only
            )
        return self._executor

    def _reset(self) -> None:
        broken, self._executor = self._executor, None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)


# A string element's cost in an answer: its Python object and its text in the JSON, not its 8-byte pointer.
_STRING_ELEMENT_BYTES = 64


def answer_size(outputs: Mapping[str, np.ndarray]) -> int:
    """About the bytes an answer's encoding handles: what decides where it is encoded."""
    return sum(
        array.size * _STRING_ELEMENT_BYTES if array.dtype.kind == "O" else array.nbytes for array in outputs.values()
    )


def inline_only(limits: Limits) -> Offload:
    """An Offload that runs everything inline (for wiring that configures no pool)."""
    return Offload(limits, sys.maxsize, 1, 0.0, 1)
