"""Keeping the garbage collector off the request path once models are in memory.

A loaded TensorFlow model is hundreds of thousands of long-lived Python objects. Left in the collected
generations, every full collection under load walks them all (150 ms and more, a pause for every request in
flight); frozen, the collector only looks at what requests allocate. So after every change of the loaded set the
heap is collected once, on the manager's thread, and what survives is frozen.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect everything (the objects of an unloaded version included), then freeze what survives."""
    gc.unfreeze()  # an unloaded version's objects were frozen with the rest: make them collectable again
    gc.collect()
    gc.freeze()
