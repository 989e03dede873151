"""rtserve at an earlier git ref, for before/after ratios from one bench run on one machine.

The ref's tree is written once with ``git archive`` into ``bench/build/rtserve-<sha>`` (git-ignored); the
``rtserve-before`` server runs the same ``.venv`` with ``PYTHONPATH`` set to that tree, so ``import service`` comes
from the old code while every dependency stays the one installed.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from bench import envs

BUILD_DIR = envs.BENCH_DIR / "build"
GIT_TIMEOUT_S = 120


def _git(repo: Path, *arguments: str) -> bytes:
    result = subprocess.run(
        ["git", "-C", str(repo), *arguments], capture_output=True, timeout=GIT_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise ValueError(f"git {' '.join(arguments)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def resolve(ref: str, repo: Path) -> str:
    """The short commit id a ref names; ValueError when the repository has no such commit."""
    return _git(repo, "rev-parse", "--short", "--verify", f"{ref}^{{commit}}").decode().strip()


def extract(ref: str, repo: Path, build_dir: Path = BUILD_DIR) -> Path:
    """The tree of ``ref`` in ``build_dir/rtserve-<sha>``, written on first use (a finished tree is reused)."""
    sha = resolve(ref, repo)
    tree = build_dir / f"rtserve-{sha}"
    done = tree / ".extracted"
    if done.is_file():
        return tree
    archive = _git(repo, "archive", "--format=tar", sha)
    tree.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")  # git's own archive: plain files and folders only
    done.write_text(sha + "\n", encoding="ascii")
    return tree
