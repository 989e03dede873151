"""The peers' own virtualenvs under ``bench/.venvs/<name>``, created on first use from pinned requirements.

``requirements/<name>.in`` holds the top-level pins; the first install writes ``requirements/<name>.lock.txt``
(``pip freeze``), and every later install uses the lock, so a fresh machine gets the same versions. A venv is
rebuilt when its requirements change (a stamp holds their hash). rtserve's own ``.venv`` is never touched.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
VENVS_DIR = BENCH_DIR / ".venvs"
REQUIREMENTS_DIR = BENCH_DIR / "requirements"
ENV_NAMES = ("kserve", "mlserver", "tools", "pytriton")
INSTALL_TIMEOUT_S = 45 * 60


def python_of(name: str) -> Path:
    return VENVS_DIR / name / "bin" / "python"


def _requirements(name: str) -> Path:
    lock = REQUIREMENTS_DIR / f"{name}.lock.txt"
    return lock if lock.is_file() else REQUIREMENTS_DIR / f"{name}.in"


def _digest(name: str) -> str:
    return hashlib.sha256(_requirements(name).read_bytes()).hexdigest()


def ensure(name: str) -> Path:
    """The venv's python, creating or rebuilding the venv first when needed."""
    if name not in ENV_NAMES:
        raise ValueError(f"unknown bench venv {name!r}")
    venv = VENVS_DIR / name
    stamp = venv / ".bench-stamp"
    if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == _digest(name) and python_of(name).exists():
        return python_of(name)
    requirements = _requirements(name)
    log.info("creating bench venv %s from %s (first run only; several minutes)", venv, requirements.name)
    if venv.exists():
        shutil.rmtree(venv)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(python_of(name)), "-m", "pip"]
    log_path = VENVS_DIR / f"{name}.install.log"
    with log_path.open("w", encoding="utf-8") as install_log:
        for arguments, timeout in (
            (["install", "--upgrade", "pip==26.3"], 600),
            (["install", "-r", str(requirements)], INSTALL_TIMEOUT_S),
        ):
            result = subprocess.run(
                [*pip, *arguments], stdout=install_log, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
            if result.returncode != 0:
                tail = log_path.read_text(encoding="utf-8").splitlines()[-20:]
                raise RuntimeError(f"pip {' '.join(arguments)} failed for bench venv {name}:\n" + "\n".join(tail))
    lock = REQUIREMENTS_DIR / f"{name}.lock.txt"
    if not lock.is_file():
        frozen = subprocess.run([*pip, "freeze", "--all"], check=True, capture_output=True, text=True, timeout=120)
        pinned = [line for line in frozen.stdout.splitlines() if "==" in line and not line.startswith("pip==")]
        header = f"# Written by bench/envs.py from {name}.in on the first install; delete it to re-resolve.\n"
        lock.write_text(header + "\n".join(sorted(pinned, key=str.lower)) + "\n", encoding="utf-8")
    stamp.write_text(_digest(name) + "\n", encoding="ascii")
    return python_of(name)


def freeze(name: str, packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of some packages in a venv (for the report)."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    python = python_of(name) if name != "rtserve" else Path(sys.executable)
    result = subprocess.run(
        [str(python), "-c", script, *packages], check=True, capture_output=True, text=True, timeout=120
    )
    import json

    versions: dict[str, str] = json.loads(result.stdout)
    return versions


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in sys.argv[1:] or ENV_NAMES:
        print(ensure(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
