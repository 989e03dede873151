"""Where codec work runs: inline for small sizes, else in a bounded pool of real worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from service.api.offload import Offload
from service.codecs import tfserving_json
from service.codecs.arrays import Limits
from service.errors import InvalidArgument, Overloaded, Unavailable

INLINE = 1000


@pytest.fixture
def offload() -> Iterator[Offload]:
    pool = Offload(Limits(100), INLINE, workers=1, wait_s=0.2, retry_after_s=3)
    yield pool
    pool.close()


def test_small_sizes_run_inline(offload: Offload) -> None:
    assert asyncio.run(offload.call(INLINE, os.getpid)) == os.getpid()


def test_large_sizes_run_in_a_worker_process(offload: Offload) -> None:
    assert asyncio.run(offload.call(INLINE + 1, os.getpid)) != os.getpid()


def test_a_refusal_in_a_worker_keeps_its_type_and_message(offload: Offload) -> None:
    body = b'{"examples": []}'
    with pytest.raises(InvalidArgument, match="'examples' is an empty list"):
        asyncio.run(offload.call(INLINE + 1, tfserving_json.decode_examples, body, 100))


def test_a_busy_pool_answers_overloaded_after_the_wait(offload: Offload) -> None:
    async def scenario() -> None:
        await offload.warm_up()
        busy = asyncio.ensure_future(offload.call(INLINE + 1, time.sleep, 2.0))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await offload.call(INLINE + 1, os.getpid)
        assert refused.value.retry_after_s == 3
        assert "busy" in refused.value.message
        await busy
        assert await offload.call(INLINE + 1, os.getpid) != os.getpid()  # the slot is free again

    asyncio.run(scenario())


def test_a_cancelled_request_keeps_the_slot_until_the_worker_is_done(offload: Offload) -> None:
    async def scenario() -> None:
        await offload.warm_up()
        busy = asyncio.ensure_future(offload.call(INLINE + 1, time.sleep, 1.0))
        await asyncio.sleep(0.05)
        busy.cancel()
        with pytest.raises(Overloaded):  # the worker still sleeps: no second job beside it
            await offload.call(INLINE + 1, os.getpid)

    asyncio.run(scenario())


def test_a_worker_that_dies_answers_unavailable_and_the_pool_restarts(offload: Offload) -> None:
    async def scenario() -> None:
        with pytest.raises(Unavailable, match="stopped"):
            await offload.call(INLINE + 1, os._exit, 3)  # as the kernel's OOM killer would end it
        assert await offload.call(INLINE + 1, os.getpid) != os.getpid()

    asyncio.run(scenario())
