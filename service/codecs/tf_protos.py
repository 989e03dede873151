"""TensorFlow's protobuf modules without the TensorFlow runtime, for processes that only read and write messages.

``tensorflow.core.framework.tensor_pb2`` and the ``tensorflow_serving.apis`` messages built on it live inside the
``tensorflow`` package, so importing one first runs ``tensorflow/__init__.py``: the whole runtime, about 500 MiB
and seconds. A codec worker never runs a model; there the package is stood in for by an empty module whose path
is the real package's, so that its proto modules (plain files under ``tensorflow/core``) import alone (47 MiB).
"""

from __future__ import annotations

import importlib.util
import sys
import types

PACKAGE = "tensorflow"
RUNTIME = "tensorflow.python"


def protos_only() -> None:
    """Make ``tensorflow.core.*`` importable without the runtime, in this process, unless it is loaded already.
    Only for processes that never run TensorFlow (the codec workers' initializer)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return  # TensorFlow is not installed: nothing to stand in for
    package = types.ModuleType(PACKAGE, "TensorFlow's proto modules only (service/codecs/tf_protos.py)")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[PACKAGE] = package


def runtime_loaded() -> bool:
    """Whether this process has loaded TensorFlow's runtime (not only its protos)."""
    return RUNTIME in sys.modules
