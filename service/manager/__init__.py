"""Model lifecycle: which versions to serve (routing.py reads serving.json), loading, swapping and unloading them
(manager.py), and settling the heap after a change (heap.py).

What callers use is re-exported here, so that ``from service.manager import ModelManager`` names the role, not the
file.
"""

from service.manager.manager import (
    AVAILABLE,
    END,
    LOADING,
    LoadedVersion,
    ModelManager,
    ModelSnapshot,
    VersionStatus,
)

__all__ = [
    "AVAILABLE",
    "END",
    "LOADING",
    "LoadedVersion",
    "ModelManager",
    "ModelSnapshot",
    "VersionStatus",
]
