"""Model lifecycle, along TF Serving's seams: which models and versions (source.py, routing.py for serving.json),
one version's states, load attempts, retries and leases (harness.py), and the manager that applies a model set,
reconciles each model and publishes snapshots (manager.py); heap.py settles the heap after a change.

What callers use is re-exported here, so that ``from service.manager import ModelManager`` names the role, not the
file. The states themselves are ``service.states.VersionState`` (a leaf: metrics and tools use it too).
"""

from service.manager.harness import LoadedVersion, VersionStatus
from service.manager.manager import ModelManager, ModelSnapshot

__all__ = [
    "LoadedVersion",
    "ModelManager",
    "ModelSnapshot",
    "VersionStatus",
]
