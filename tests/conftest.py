"""Shared fixtures: real SavedModels, each built once per session.

Every model fixture returns a version folder ``<root>/<model>/1``, so ``.parent.parent`` is a repository root
holding just that model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before anything imports TensorFlow: keep its C++ logging quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Make tests/modelfactory.py importable as `modelfactory` whatever the import mode.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def _version_dir(factory: pytest.TempPathFactory, model: str) -> Path:
    model_dir = factory.mktemp("repository") / model
    model_dir.mkdir()
    return model_dir / "1"


@pytest.fixture(scope="session")
def keras_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelfactory import keras_classifier

    return keras_classifier(_version_dir(tmp_path_factory, "keras"))


@pytest.fixture(scope="session")
def multi_signature_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelfactory import multi_signature_module

    return multi_signature_module(_version_dir(tmp_path_factory, "multi"))


@pytest.fixture(scope="session")
def classify_regress_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelfactory import regress_classify_module

    return regress_classify_module(_version_dir(tmp_path_factory, "examples"))


@pytest.fixture(scope="session")
def corrupt_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelfactory import corrupt_model

    return corrupt_model(_version_dir(tmp_path_factory, "corrupt"))


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.tools.demo import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("repository") / "iris")


@pytest.fixture(scope="session")
def reads_file_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose signature reads a file (ReadFile), which screening refuses; the file holds 5 bytes."""
    from modelfactory import reads_file_model

    target = tmp_path_factory.mktemp("secret") / "secret.txt"
    target.write_text("hello")
    return reads_file_model(_version_dir(tmp_path_factory, "reader"), str(target))


@pytest.fixture(scope="session")
def batch_mixing_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Signatures whose rows depend on each other (softmax, centering, ranking over the batch) and one that not."""
    from modelfactory import batch_mixing_module

    return batch_mixing_module(_version_dir(tmp_path_factory, "mixing"))


@pytest.fixture(scope="session", params=["tf2", "tf1"])
def half_plus_two_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two in each flavour (modelfactory.half_plus_two_tf2 / _tf1)."""
    import modelfactory

    build = getattr(modelfactory, f"half_plus_two_{request.param}")
    return Path(build(_version_dir(tmp_path_factory, f"half_plus_two_{request.param}")))


@pytest.fixture(scope="module", params=["session", "function"])
def runner(request: pytest.FixtureRequest) -> str:
    """The signature runner a runtime test loads its models with: each such test runs on both."""
    return str(request.param)
