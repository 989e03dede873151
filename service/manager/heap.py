"""Keeping the garbage collector off the request path once models are in memory.

A loaded TensorFlow model is hundreds of thousands of long-lived Python objects. Left in the collected
generations, every full collection under load walks them all (150 ms and more, a pause for every request in
flight); frozen, the collector only looks at what requests allocate. So after every change of the loaded set the
heap is collected once, on the manager's thread, and what survives is frozen.

At start the imported modules (TensorFlow's alone are some 300,000 objects) are frozen before any model loads,
without a collection: the settle after a load that unloaded nothing then walks only what the load made (a
millisecond, not the half second of a full collection in the middle of the cold start).
"""

from __future__ import annotations

import gc


def freeze_imports() -> None:
    """Keep the modules imported so far out of every collection (their import-time garbage, a few dozen objects,
    is freed by the first settle after an unload)."""
    gc.freeze()


def settle_heap(unloaded: bool = True) -> None:
    """Collect, then freeze what survives; after an unload (``unloaded``) everything, its objects included."""
    if unloaded:
        gc.unfreeze()  # an unloaded version's objects were frozen with the rest: make them collectable again
    gc.collect()
    gc.freeze()
