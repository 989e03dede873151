"""settle_heap: an unloaded version's garbage is collected, and what survives is kept out of later collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service.manager.heap import settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_survivors_are_frozen_and_frozen_garbage_is_freed_by_the_next_settle() -> None:
    kept, dropped = Node(), Node()
    dropped_ref = weakref.ref(dropped)
    settle_heap()
    assert gc.get_freeze_count() > 0
    # Frozen objects are invisible to collections: what a request allocates is all the collector walks.
    assert not any(obj is kept for obj in gc.get_objects())
    del dropped  # now garbage, but frozen: a plain collection cannot free it
    gc.collect()
    assert dropped_ref() is not None
    settle_heap()  # what the manager does after an unload
    assert dropped_ref() is None
    assert kept.me is kept
