"""`tensorflow_model_server` started exactly as TF Serving is started: the real process on free loopback ports,
real TensorFlow models in TF Serving's layout (zero-padded version folders), REST clients. (gRPC clients against
this command come with the gRPC front end's merge.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from apptools import (
    free_port,
    running_server,
    tensorflow_model_server_command,
    tf_serving_base,
    tf_serving_config_file,
    tf_serving_env,
    tf_serving_one_model,
    tf_serving_polled_config,
    wait_until,
)

pytestmark = pytest.mark.integration

SETOSA = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def test_one_model_by_name_and_base_path_serves_rest_and_grpc(demo_model_dir: Path, tmp_path: Path) -> None:
    base = tf_serving_base(tmp_path, "iris", demo_model_dir)
    rest, grpc = free_port(), free_port()
    command = tf_serving_one_model(
        rest,
        grpc,
        base,
        "--no_such_flag=1",
        "--enable_profiler=false",
    )
    with running_server(tf_serving_env(tmp_path, grpc), tmp_path, command=command, port=rest) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            status = http.get("/v1/models/iris").json()
            assert status["model_version_status"][0]["version"] == "123", "folder 00000123 is version 123"
            answer = http.post("/v1/models/iris:predict", json=SETOSA)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"][0]) == 3
            assert http.post("/v1/models/iris/versions/123:predict", json=SETOSA).status_code == 200
        with socket.create_connection(("127.0.0.1", grpc), timeout=5):
            pass  # --port is the gRPC port
        log = server.log()
    assert "unknown argument: --no_such_flag=1" in log, "reported as TF Serving does; the server started anyway"
    assert "accepted but without effect in rtserve: --enable_profiler" in log


def test_config_file_is_reread_and_models_added_and_removed(demo_model_dir: Path, tmp_path: Path) -> None:
    a, b, c = (
        tf_serving_base(tmp_path, name, demo_model_dir, version)
        for name, version in (("a", "1"), ("b", "2"), ("c", "3"))
    )
    models = tf_serving_config_file(tmp_path / "models.config", a=a, b=b)
    rest, grpc = free_port(), free_port()
    command = tf_serving_polled_config(rest, grpc, models)
    with (
        running_server(tf_serving_env(tmp_path, grpc), tmp_path, command=command, port=rest) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/v1/models/a").status_code == 200
        assert http.get("/v1/models/b").json()["model_version_status"][0]["version"] == "2"
        assert http.get("/v1/models/c").status_code == 404
        tf_serving_config_file(models, a=a, c=c)  # b removed, c added

        def changed() -> bool:
            status = http.get("/v1/models/c")
            return (
                status.status_code == 200
                and status.json()["model_version_status"][0]["state"] == "AVAILABLE"
                and http.get("/v1/models/b").status_code == 404
            )

        wait_until(changed, 60, 0.2, "c served and b dropped after the file changed")
        assert http.post("/v1/models/c:predict", json=SETOSA).status_code == 200
        assert http.post("/v1/models/a:predict", json=SETOSA).status_code == 200, "a kept serving"

        models.write_text("model_config_list { config { nme: 'x' } }")  # broken: the current set stays
        wait_until(lambda: "model config file not applied" in server.log(), 30, 0.2, "the broken file logged")
        assert http.post("/v1/models/c:predict", json=SETOSA).status_code == 200
        metrics = http.get("/metrics").text
        assert 'rtserve_model_config_reloads_total{outcome="failure"} 1.0' in metrics
        assert 'rtserve_model_config_reloads_total{outcome="success"} 1.0' in metrics


def test_a_config_file_that_does_not_parse_stops_the_start(tmp_path: Path) -> None:
    models = tmp_path / "models.config"
    models.write_text("model_config_list {\n  config {\n    name: 'a'\n    base_path: '/a'\n    policy: 1\n  }\n}\n")
    command = tensorflow_model_server_command(
        f"--port={free_port()}", f"--rest_api_port={free_port()}", f"--model_config_file={models}"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 5:5: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "policy".'
    ) in done.stderr


def test_batching_file_and_tf_threads_are_taken(demo_model_dir: Path, tmp_path: Path) -> None:
    base = tf_serving_base(tmp_path, "iris", demo_model_dir)
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 200 }\nnum_batch_threads { value: 4 }\n"
    )
    rest, grpc = free_port(), free_port()
    command = tf_serving_one_model(
        rest,
        grpc,
        base,
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        "--rest_api_timeout_in_ms=60000",
    )
    with running_server(tf_serving_env(tmp_path, grpc), tmp_path, command=command, port=rest) as server:
        answer = httpx.post(server.url + "/v1/models/iris:predict", json=SETOSA, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "without effect in rtserve: num_batch_threads" in server.log()


def test_a_batching_file_without_enable_batching_stops_the_start(tmp_path: Path) -> None:
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\n")
    command = tensorflow_model_server_command(
        f"--port={free_port()}", "--model_base_path=/models/m", f"--batching_parameters_file={batching}"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "batching_parameters_file is set without setting server_options.enable_batching to true" in done.stderr


def test_monitoring_config_serves_prometheus_at_its_path(demo_model_dir: Path, tmp_path: Path) -> None:
    base = tf_serving_base(tmp_path, "iris", demo_model_dir)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    keys = tmp_path / "keys"
    keys.write_text("k-monitoring-5c1f\n")
    rest, grpc_port = free_port(), free_port()
    command = tf_serving_one_model(rest, grpc_port, base, f"--monitoring_config_file={monitoring}")
    server_env = {**tf_serving_env(tmp_path, grpc_port), "RTSERVE_AUTH__KEYS_FILE": str(keys)}
    with running_server(server_env, tmp_path, command=command, port=rest) as server:
        # Without a key, as /metrics (RTSERVE_AUTH__EXEMPT_METRICS); the inference routes still want one.
        answer = httpx.get(server.url + "/monitoring/prometheus/metrics", timeout=10)
        assert answer.status_code == 200
        assert "rtserve_model_version_state" in answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 200
        assert httpx.post(server.url + "/v1/models/iris:predict", json=SETOSA, timeout=10).status_code == 401


def test_rest_api_port_zero_serves_grpc_only(demo_model_dir: Path, tmp_path: Path) -> None:
    """TF Serving's default (no REST): gRPC serves alone, the models load and unload once, SIGTERM drains gRPC and
    exits 0."""
    base = tf_serving_base(tmp_path, "iris", demo_model_dir)
    rest, grpc_port = free_port(), free_port()
    command = tensorflow_model_server_command(
        f"--port={grpc_port}", "--rest_api_port=0", "--model_name=iris", f"--model_base_path={base}"
    )
    full_env = {
        **os.environ,
        **tf_serving_env(tmp_path, grpc_port),
        "RTSERVE_PORT": str(rest),
        "RTSERVE_HOST": "127.0.0.1",
        "RTSERVE_SHUTDOWN_DELAY_S": "2",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            wait_until(lambda: serving(channel), 90, 0.2, "gRPC health SERVING")
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "iris"
            request.inputs["features"].CopyFrom(tf.make_tensor_proto([SETOSA["instances"][0]], dtype=tf.float32))
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
            assert answer.model_spec.version.value == 123
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", rest)) != 0, "nothing listens for REST"
            process.send_signal(signal.SIGTERM)
            # Draining: unready at once, still answering for the shutdown delay, then gone, exit 0.
            wait_until(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, 5, 0.05, "NOT_SERVING")
            assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text
    assert "serving gRPC only" in text
    # The app's lifespan, which starts and stops the manager and every component, ran once each way.
    assert text.count("Application startup complete.") == 1, text
    assert text.count("Application shutdown complete.") == 1, text
    assert text.count("model iris version 123 is AVAILABLE") == 1, text


def health(channel: grpc.Channel) -> int | None:
    """The server's gRPC health status, None when the call fails."""
    try:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status)
    except grpc.RpcError:
        return None


def serving(channel: grpc.Channel) -> bool:
    return health(channel) == health_pb2.HealthCheckResponse.SERVING
