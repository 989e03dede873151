"""One TensorFlow, resolved by pip: what pyproject.toml asks for is installed at versions that satisfy every
requirement down the tree (what `pip check` verifies), one distribution provides `import tensorflow`, and no install
step (Makefile, .ci/run, Dockerfile) bypasses the resolver with --no-deps, so the venv and the image agree."""

import importlib.metadata as metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
INSTALL_FILES = ("Makefile", ".ci/run", "Dockerfile")


def project_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_the_environment_is_consistent() -> None:
    """pip's own check: every installed distribution's requirements are met. With tensorflow-cpu it reports that
    tensorflow-serving-api requires `tensorflow` (the distribution, by that name), which is not installed."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_project_requirements_are_installed() -> None:
    """What pyproject.toml pins (runtime and dev) is what is installed: the venv is not older than the file."""
    wrong = []
    for requirement in project_requirements("dev"):
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement}: {version} installed")
    assert wrong == []


def test_tensorflow_serving_api_is_a_runtime_dependency() -> None:
    """The image installs the runtime list only: the API's messages must be in it, pinned like the rest."""
    runtime = {canonicalize_name(r.name): str(r.specifier) for r in project_requirements()}
    assert runtime.get("tensorflow-serving-api") == "==2.21.0"
    assert runtime.get("tensorflow") == "==2.21.0"
    assert "tensorflow-cpu" not in runtime


def test_one_distribution_provides_tensorflow() -> None:
    providers = {canonicalize_name(name) for name in metadata.packages_distributions().get("tensorflow", [])}
    runtime = {canonicalize_name(r.name) for r in project_requirements()}
    assert len(providers) == 1 and providers <= runtime, f"`import tensorflow` comes from {sorted(providers)}"


def commands(text: str) -> list[str]:
    """Shell commands of a file: continuation lines joined, split at newlines, `&&`, `||` and `;`."""
    return [part.strip() for part in re.split(r"\n|&&|\|\||;", text.replace("\\\n", " ")) if part.strip()]


@pytest.mark.parametrize("name", INSTALL_FILES)
def test_no_install_step_bypasses_the_resolver(name: str) -> None:
    installs = [command for command in commands((ROOT / name).read_text(encoding="utf-8")) if "pip install" in command]
    bypassing = [command for command in installs if "--no-deps" in command.split()]
    assert bypassing == [], f"{name}: pip install --no-deps skips the resolver"


def test_the_image_build_checks_what_it_installed() -> None:
    dockerfile = commands((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert any(re.fullmatch(r"\S*pip check", command) for command in dockerfile)
