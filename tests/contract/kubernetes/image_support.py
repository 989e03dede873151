"""The image without a Docker engine: its final stage read from the Dockerfile (ENTRYPOINT, CMD, ENV, the files it
puts under /usr/bin), and a container's command line (Kubernetes' `command`/`args` over the image's ENTRYPOINT/CMD)
replayed on this machine with the real processes: /usr/bin/tf_serving_entrypoint.sh is the repository's script,
/usr/bin/tensorflow_model_server and `rtserve` are the project's commands (from the venv in use)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from apptools import ServerProcess, running_server, tensorflow_model_server_command
from kube_support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
# The builder stage copies the build context into WORKDIR /src.
BUILDER_WORKDIR = "/src/"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in joined]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


@dataclass
class Image:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    exposed: list[int]
    # Image path -> repository file, for files copied from the build context (through the builder's /src).
    files: dict[str, Path]
    # Image path -> image path it links to (RUN ln -s).
    links: dict[str, str]


def final_image() -> Image:
    final = stages()[-1]
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    exposed: list[int] = []
    files: dict[str, Path] = {}
    links: dict[str, str] = {}
    for instruction, args in final:
        if instruction == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif instruction == "CMD":
            cmd = json.loads(args)
        elif instruction == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
        elif instruction == "EXPOSE":
            exposed += [int(port.split("/")[0]) for port in args.split()]
        elif instruction == "COPY":
            words = [w for w in args.split() if not w.startswith("--")]
            source, target = words[0], words[-1]
            if source.startswith(BUILDER_WORKDIR):
                files[target] = ROOT / source.removeprefix(BUILDER_WORKDIR)
        elif instruction == "RUN":
            for source, target in re.findall(r"ln -s (\S+) (\S+)", args):
                links[target] = source
    return Image(entrypoint, cmd, env, exposed, files, links)


def container_argv(image: Image, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """What the kubelet runs: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD."""
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(image.cmd if args is None else args)]


PORT_FLAG = re.compile(r"(--(?:port|rest_api_port)=)(\d+)")


def remap_ports(text: str, ports: Mapping[int, int]) -> str:
    """`--port=N` / `--rest_api_port=N` with N moved to ports[N] (free loopback ports in the tests)."""
    return PORT_FLAG.sub(lambda m: m.group(1) + str(ports.get(int(m.group(2)), int(m.group(2)))), text)


def local_argv(image: Image, argv: Sequence[str], ports: Mapping[int, int], folder: Path) -> list[str]:
    """The image's command line made runnable here, its ports moved by ``ports``: image files become the
    repository's (a copy in ``folder`` with the ports moved, for the entrypoint script), and tensorflow_model_server
    (by name, at /usr/bin, or through the image's link) becomes the project's command."""
    first, rest = argv[0], [remap_ports(arg, ports) for arg in argv[1:]]
    target = image.links.get(first, first)
    if first == "tensorflow_model_server" or target.endswith("/bin/tensorflow_model_server"):
        return tensorflow_model_server_command(*rest)
    if first in image.files:
        script = folder / Path(first).name
        script.write_text(remap_ports(image.files[first].read_text(encoding="utf-8"), ports), encoding="utf-8")
        return ["/bin/sh", str(script), *rest]
    if first == "rtserve":
        return [str(Path(sys.executable).with_name("rtserve")), *rest]
    raise AssertionError(f"{first} is not a command the image provides")


def shim_bin(folder: Path) -> Path:
    """A folder for PATH holding `tensorflow_model_server` and `rtserve` as the image's PATH has them."""
    folder.mkdir(parents=True, exist_ok=True)
    server = folder / "tensorflow_model_server"
    server.write_text(f'#!/bin/sh\nexec {shlex.join(tensorflow_model_server_command())} "$@"\n', encoding="utf-8")
    server.chmod(0o755)
    rtserve = folder / "rtserve"
    if not rtserve.exists():
        rtserve.symlink_to(Path(sys.executable).with_name("rtserve"))
    return folder


def container_env(image: Image, container: Mapping[str, Any], bin_folder: Path, cache: Path) -> dict[str, str]:
    """The image's ENV overlaid with the container's `env` (literal values), PATH through the shims, the cache in a
    writable folder, and nothing from this machine's RTSERVE_* or TF Serving variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RTSERVE_") and k not in {"MODEL_NAME", "MODEL_BASE_PATH"}
    }
    env.update({k: v for k, v in image.env.items() if k != "PATH"})
    env.update({item["name"]: str(item["value"]) for item in container.get("env", []) if "value" in item})
    env["PATH"] = f"{bin_folder}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env["RTSERVE_CACHE_DIR"] = str(cache)
    return env


def moved(text: str, mounts: Mapping[str, Path]) -> str:
    """Container paths (a whole argument, or a flag's value) moved to the folders that stand for their mounts."""
    for mount, folder in mounts.items():
        pattern = rf"(^|=){re.escape(mount.rstrip('/'))}(?=/|$)"
        replacement = str(folder)
        text = re.sub(pattern, lambda match, new=replacement: match.group(1) + new, text)
    return text


def replay(
    container: Mapping[str, Any], ports: Mapping[int, int], mounts: Mapping[str, Path], folder: Path, grpc_port: int
) -> tuple[dict[str, str], list[str]]:
    """(environment, command line) of the container's process as the kubelet would start it in the image
    (command/args over ENTRYPOINT/CMD, the image's ENV under the container's env), ports moved by ``ports`` and
    mount paths by ``mounts``, on loopback."""
    image = final_image()
    folder.mkdir(parents=True, exist_ok=True)
    argv = container_argv(image, container.get("command"), container.get("args"))
    argv = [argv[0], *(moved(arg, mounts) for arg in argv[1:])]
    env = container_env(image, container, shim_bin(folder / "bin"), folder / "cache")
    env["MODEL_BASE_PATH"] = moved(env["MODEL_BASE_PATH"], mounts)
    # Loopback only; ServerProcess also pins RTSERVE_PORT / RTSERVE_GRPC_PORT to the moved ports the flags name.
    env |= {"RTSERVE_HOST": "127.0.0.1", "RTSERVE_GRPC_PORT": str(grpc_port)}
    return env, local_argv(image, argv, ports, folder)


@contextmanager
def replayed_container(
    container: Mapping[str, Any],
    ports: Mapping[int, int],
    mounts: Mapping[str, Path],
    folder: Path,
    *,
    rest_port: int,
    grpc_port: int,
) -> Iterator[ServerProcess]:
    """The container's process (``replay``), yielded once /v2/health/ready answers on ``rest_port`` (the moved
    REST port; ``grpc_port`` the moved gRPC one), stopped with SIGTERM after."""
    env, command = replay(container, ports, mounts, folder, grpc_port)
    with running_server(env, folder, command=command, port=rest_port) as server:
        yield server


def run_probe(probe: Mapping[str, Any], container: Mapping[str, Any], ports: Mapping[int, int]) -> bool:
    """A Kubernetes httpGet or tcpSocket probe against the moved ports: True when it succeeds (2xx/3xx, connected)."""

    def port_of(value: int | str) -> int:
        if isinstance(value, str):
            value = next(int(p["containerPort"]) for p in container["ports"] if p["name"] == value)
        return ports[value]

    if "httpGet" in probe:
        get = probe["httpGet"]
        answer = httpx.get(f"http://127.0.0.1:{port_of(get['port'])}{get.get('path', '/')}", timeout=5)
        return 200 <= answer.status_code < 400
    if "tcpSocket" in probe:
        with socket.create_connection(("127.0.0.1", port_of(probe["tcpSocket"]["port"])), timeout=5):
            return True
    raise AssertionError(f"probe kind not replayed here: {sorted(probe)}")
