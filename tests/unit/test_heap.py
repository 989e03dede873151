"""settle_heap: an unloaded version's garbage is collected, and what survives is kept out of later collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service.manager.heap import freeze_imports, settle_heap


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


def test_a_settle_after_loads_only_leaves_what_is_frozen_frozen() -> None:
    imported, garbage = Node(), Node()
    garbage_ref = weakref.ref(garbage)
    freeze_imports()  # what `rtserve serve` does once its modules are imported, before any load
    del garbage  # import-time garbage, frozen with the modules
    loaded = Node()
    settle_heap(unloaded=False)  # a load, nothing unloaded: what is frozen is not thawed, nor walked again
    assert garbage_ref() is not None
    assert not any(obj is imported or obj is loaded for obj in gc.get_objects())  # the loaded objects joined them
    settle_heap()  # the first settle after an unload frees it
    assert garbage_ref() is None
