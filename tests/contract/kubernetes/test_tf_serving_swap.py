"""The image swap: the image keeps TF Serving's image contract beside rtserve's (tensorflow_model_server at
/usr/bin, MODEL_NAME / MODEL_BASE_PATH, ports 8500 and 8501, arguments appended to TF Serving's command line), and a
Deployment written for tensorflow/serving (k8s/examples/tf-serving-deployment.yaml) works with only its image
changed: it is valid Kubernetes, and the real process started exactly as the kubelet would start that container in
the image (the Dockerfile's ENTRYPOINT/CMD/ENV under the manifest's args and env; ports moved to free ones, the
model volume to a folder) passes the manifest's probes and predicts over REST and gRPC."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import test_manifests_valid
from image_support import (
    container_argv,
    final_image,
    local_argv,
    remap_ports,
    replayed_container,
    run_probe,
    stages,
)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_manifests_valid import validation_problems

from apptools import ServerProcess, free_port
from kube_support import K8S, ROOT, Manifest, load_all, restricted_violations

# The Kubernetes versions the chart claims (a fixture of test_manifests_valid, shared here).
versions = test_manifests_valid.versions
EXAMPLE = K8S / "examples" / "tf-serving-deployment.yaml"
ENTRYPOINT = "/usr/bin/tf_serving_entrypoint.sh"
MODEL = "half_plus_two"
TIMEOUT_S = 30


def example() -> list[Manifest]:
    return load_all(EXAMPLE.read_text(encoding="utf-8"))


def example_container() -> Manifest:
    deployment = next(obj for obj in example() if obj["kind"] == "Deployment")
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


# --- The image's contract, from the Dockerfile -----------------------------------------------------------------


def test_image_has_tf_serving_contract_beside_rtserve() -> None:
    image = final_image()
    assert image.entrypoint == [ENTRYPOINT], "TF Serving's entrypoint name"
    assert image.files[ENTRYPOINT] == ROOT / "service" / "compat" / "tf_serving_entrypoint.sh"
    assert image.cmd == ["serve"], "rtserve serve stays the default"
    assert {"MODEL_BASE_PATH": "/models", "MODEL_NAME": "model"}.items() <= image.env.items()
    assert {8500, 8501} <= set(image.exposed)
    # KServe's runtimes call /usr/bin/tensorflow_model_server: it is the venv's console script.
    assert image.links["/usr/bin/tensorflow_model_server"] == "/opt/rtserve/bin/tensorflow_model_server"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["tensorflow_model_server"] == "service.compat.main:main"
    assert "python -m venv /opt/rtserve" in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def recorded_argv(tmp_path: Path, args: list[str] | None, env: dict[str, str]) -> list[str]:
    """The command line the image's entrypoint execs for these args (None: the image's CMD) and env, observed
    through stand-ins for tensorflow_model_server and rtserve that print their arguments (the live tests below
    run the real ones)."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir(exist_ok=True)
    for name in ("tensorflow_model_server", "rtserve"):
        stand_in = bin_folder / name
        stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" {name} "$@"\n', encoding="utf-8")
        stand_in.chmod(0o755)
    image = final_image()
    argv = container_argv(image, None, args)
    assert argv[0] == ENTRYPOINT
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTSERVE_") and not k.startswith("MODEL_")}
    full_env = {**clean, **{k: v for k, v in image.env.items() if k != "PATH"}, **env, "PATH": f"{bin_folder}:/bin"}
    result = subprocess.run(
        ["/bin/sh", str(image.files[ENTRYPOINT]), *argv[1:]],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


TF_SERVING = ["tensorflow_model_server", "--port=8500", "--rest_api_port=8501"]
APPENDED = ["--port=9000", "--model_config_file=/c/models.config"]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        # docker run tensorflow/serving, env only (the image's CMD is left): TF Serving's command line.
        (None, {}, [*TF_SERVING, "--model_name=model", "--model_base_path=/models/model"]),
        (None, {"MODEL_NAME": "m"}, [*TF_SERVING, "--model_name=m", "--model_base_path=/models/m"]),
        (
            None,
            {"MODEL_NAME": "m", "MODEL_BASE_PATH": "/data"},
            [*TF_SERVING, "--model_name=m", "--model_base_path=/data/m"],
        ),
        # args only: appended, as TF Serving's entrypoint appends them (its flags win: the later one counts).
        (
            APPENDED,
            {},
            [*TF_SERVING, "--model_name=model", "--model_base_path=/models/model", *APPENDED],
        ),
        # The full command line as the first argument: run as it is.
        (["tensorflow_model_server", "--port=9000"], {}, ["tensorflow_model_server", "--port=9000"]),
        (["/usr/bin/tensorflow_model_server", "--port=9000"], {}, ["tensorflow_model_server", "--port=9000"]),
        # rtserve's chart: args [serve] with RTSERVE_REPOSITORY from its ConfigMap.
        (["serve"], {"RTSERVE_REPOSITORY": "s3://models"}, ["rtserve", "serve"]),
        (None, {"RTSERVE_MODEL_CONFIG_FILE": "/c/models.config"}, ["rtserve", "serve"]),
        (["serve", "--port", "9090"], {}, ["rtserve", "serve", "--port", "9090"]),
        (["push", "./model", "iris"], {}, ["rtserve", "push", "./model", "iris"]),
    ],
)
def test_entrypoint_runs_tf_serving_or_rtserve(
    tmp_path: Path, args: list[str] | None, env: dict[str, str], expected: list[str]
) -> None:
    assert recorded_argv(tmp_path, args, env) == expected


# --- The example Deployment -----------------------------------------------------------------------------------


def test_example_is_valid_kubernetes(versions: list[str]) -> None:
    objects = example()
    assert [obj["kind"] for obj in objects] == ["Deployment", "Service"]
    assert validation_problems(objects, versions) == []
    assert restricted_violations(objects[0]["spec"]["template"]["spec"]) == []


def test_example_is_a_tf_serving_manifest() -> None:
    """What a tensorflow/serving Deployment relies on: no command (the image's entrypoint stays), TF Serving's
    flags in args, MODEL_NAME, TF Serving's ports, probes on them."""
    container = example_container()
    assert "command" not in container
    assert container["args"][:2] == ["--port=8500", "--rest_api_port=8501"]
    assert {"name": "MODEL_NAME", "value": MODEL} in container["env"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v1/models/{MODEL}", "port": 8501}
    assert container["livenessProbe"]["tcpSocket"] == {"port": 8500}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model volume: /models/half_plus_two holding version 00000123 (TF Serving's tutorial layout)."""
    import modelfactory

    root = tmp_path_factory.mktemp("models")
    built = modelfactory.half_plus_two_tf2(tmp_path_factory.mktemp("build") / "1")
    shutil.copytree(built, root / MODEL / "00000123")
    return root


@contextmanager
def swapped(container: Manifest, models_root: Path, folder: Path) -> Iterator[tuple[ServerProcess, dict[int, int]]]:
    ports = {8500: free_port(), 8501: free_port()}
    with replayed_container(
        container, ports, {"/models": models_root}, folder, rest_port=ports[8501], grpc_port=ports[8500]
    ) as server:
        yield server, ports


@pytest.fixture(scope="module")
def deployment_server(
    models_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, dict[int, int]]]:
    with swapped(example_container(), models_root, tmp_path_factory.mktemp("deployment")) as running:
        yield running


def grpc_predict(port: int, model: str, values: list[float]) -> list[float]:
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, TIMEOUT_S)
    assert answer.model_spec.name == model
    return [float(v) for v in tf.make_ndarray(answer.outputs["y"]).ravel()]


def check_serving(server: ServerProcess, ports: dict[int, int], container: Manifest) -> None:
    for probe in ("readinessProbe", "livenessProbe"):
        assert run_probe(container[probe], container, ports), f"{probe} failed:\n{server.log()[-3000:]}"
    answer = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert grpc_predict(ports[8500], MODEL, [1.0, 2.0, 5.0]) == [2.5, 3.0, 4.5]


def test_example_deployment_serves_after_the_swap(deployment_server: tuple[ServerProcess, dict[int, int]]) -> None:
    server, ports = deployment_server
    check_serving(server, ports, example_container())
    # TF Serving's model status document on the REST port, as its users' probes and scripts read it.
    status = httpx.get(f"{server.url}/v1/models/{MODEL}", timeout=10).json()
    assert status["model_version_status"][0]["version"] == "123"
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_env_only_deployment_serves_after_the_swap(models_root: Path, tmp_path: Path) -> None:
    """The other common tensorflow/serving manifest: no args, only MODEL_NAME (the image's CMD is left, and
    nothing configures rtserve): TF Serving's ports 8500/8501 and /models/<MODEL_NAME>."""
    container: dict[str, Any] = copy.deepcopy(example_container())
    del container["args"]
    with swapped(container, models_root, tmp_path) as (server, ports):
        check_serving(server, ports, container)


def test_port_remapping_moves_only_the_named_ports() -> None:
    """Control for the replay: the image's fixed ports are moved, nothing else is."""
    text = "--port=8500 --rest_api_port=8501 --model_name=m --rest_api_timeout_in_ms=8500"
    assert (
        remap_ports(text, {8500: 1, 8501: 2})
        == "--port=1 --rest_api_port=2 --model_name=m --rest_api_timeout_in_ms=8500"
    )
    assert remap_ports("--port=9000", {8500: 1}) == "--port=9000"


def test_replay_runs_the_repository_script_with_the_ports_moved(tmp_path: Path) -> None:
    image = final_image()
    argv = local_argv(image, container_argv(image, None, None), {8500: 1, 8501: 2}, tmp_path)
    assert argv == ["/bin/sh", str(tmp_path / "tf_serving_entrypoint.sh"), "serve"]
    script = (tmp_path / "tf_serving_entrypoint.sh").read_text(encoding="utf-8")
    assert "--port=1 --rest_api_port=2" in script and "8500" not in script.split("set -eu")[1]


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD (exec form)."""
    import json

    (args,) = [args for instruction, args in stages()[-1] if instruction == "HEALTHCHECK"]
    command: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return command


def test_healthcheck_finds_the_tf_serving_rest_port(deployment_server: tuple[ServerProcess, dict[int, int]]) -> None:
    """`docker run` as TF Serving: the image's HEALTHCHECK finds the server live on TF Serving's REST port (moved
    here, as the server's), and reports a dead one."""
    server, ports = deployment_server
    python, *rest = healthcheck_command()
    assert python == "python"

    def healthcheck(port: int) -> int:
        code = [part.replace("'8501'", f"'{port}'") for part in rest]
        env = {k: v for k, v in os.environ.items() if k != "RTSERVE_PORT"}
        return subprocess.run([sys.executable, *code], env=env, timeout=30, check=False).returncode

    assert healthcheck(ports[8501]) == 0, server.log()[-2000:]
    assert healthcheck(free_port()) == 1


def test_appended_flags_win_over_the_entrypoints() -> None:
    """As in TF Serving (each flag parsed in order): `args: [--port=9000, --model_name=m]` after the entrypoint's
    own flags moves gRPC and renames the model."""
    from service.compat.flags import parse_flags

    parsed = parse_flags([*TF_SERVING[1:], "--model_name=model", "--port=9000", "--model_name=m"])
    assert (parsed.given["port"], parsed.given["rest_api_port"], parsed.given["model_name"]) == (9000, 8501, "m")
    assert parsed.unknown == [] and parsed.errors == []
