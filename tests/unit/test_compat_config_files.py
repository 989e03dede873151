"""TF Serving's text-format config files as rtserve reads them: ModelServerConfig -> ModelSet (the examples of
TF Serving's g3doc/serving_config.md), MonitoringConfig, BatchingParameters, SSLConfig; a broken file's message is
TF Serving's (protobuf's) line. The three messages the tensorflow-serving-api wheel lacks come from a checked-in
descriptor set in a private pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from service.compat import config_files, messages
from service.compat.config_files import ConfigFileError
from service.policy import VersionPolicy

# g3doc/serving_config.md, "Model Server Config File"
TWO_MODELS = """
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
  }
}
"""
# g3doc/serving_config.md, "Serving a specific version of a model" and "Assigning String Labels"
SPECIFIC_WITH_LABELS = """
model_config_list {
  config {
    name: 'my_model'
    base_path: '/models/my_model'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
    version_labels {
      key: 'canary'
      value: 43
    }
  }
}
"""
ALL_VERSIONS = (
    "model_config_list { config { name: 'm' base_path: 's3://bucket/m' model_platform: 'tensorflow' "
    "model_version_policy { all: {} } } }"
)
LATEST_TWO = (
    "model_config_list { config { name: 'm' base_path: '/m' model_version_policy { latest { num_versions: 2 } } } }"
)


def test_serving_configs_two_models() -> None:
    model_set = config_files.parse_model_server_config(TWO_MODELS)
    assert [(m.name, m.base_path, m.model_platform) for m in model_set.config] == [
        ("my_first_model", "/tmp/my_first_model/", "tensorflow"),
        ("my_second_model", "/tmp/my_second_model/", "tensorflow"),
    ]
    assert all(m.policy == VersionPolicy("latest", latest=1) for m in model_set.config), "TF Serving's default"


def test_specific_versions_and_labels() -> None:
    (model,) = config_files.parse_model_server_config(SPECIFIC_WITH_LABELS).config
    assert model.policy == VersionPolicy("specific", specific=frozenset({42, 43}))
    assert model.version_labels == {"stable": 42, "canary": 43}


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        (ALL_VERSIONS, VersionPolicy("all")),
        (LATEST_TWO, VersionPolicy("latest", latest=2)),
        (
            "model_config_list { config { name: 'm' base_path: '/m' model_version_policy { latest {} } } }",
            VersionPolicy("latest", latest=1),
        ),
    ],
)
def test_version_policies(text: str, policy: VersionPolicy) -> None:
    (model,) = config_files.parse_model_server_config(text).config
    assert model.policy == policy


def test_an_empty_file_is_an_empty_set() -> None:
    assert config_files.parse_model_server_config("").config == ()
    assert config_files.parse_model_server_config("model_config_list {}").config == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list {\n  config { nme: 'a' }\n}\n",
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:12: Message type "
            '"tensorflow.serving.ModelConfig" has no field named "nme".',
        ),
        (
            "model_config_list {\n  config { name: 'a' base_path: '/a' }\n",
            'Error parsing text-format tensorflow.serving.ModelServerConfig: 2:38: Expected "}".',
        ),
        (
            "model_config_list { config { name: 'a' version_labels { key: 'x' value: 'one' } } }",
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:73: 'model_config_list { config { name: "
            "'a' version_labels { key: 'x' value: 'one' } } }': Couldn't parse integer: 'one'",
        ),
    ],
)
def test_a_file_that_does_not_parse_gives_tf_servings_message(text: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as error:
        config_files.parse_model_server_config(text)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("custom_model_config { type_url: 'x/y' }", "custom_model_config is not supported"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' logging_config { sampling_config {} } } }",
            "logging_config (request logging) is not supported",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tflite' } }",
            "model_platform 'tflite'",
        ),
        ("model_config_list { config { name: 'a' base_path: '/a' model_type: OTHER } }", "model_type 2"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
            "more than once",
        ),
        ("model_config_list { config { name: 'a' } }", "base_path"),
        ("model_config_list { config { name: '../x' base_path: '/a' } }", "invalid model name"),
    ],
)
def test_unsupported_or_invalid_content_is_refused_by_name(text: str, names: str) -> None:
    with pytest.raises(ConfigFileError, match=r"^model config file: ") as error:
        config_files.parse_model_server_config(text)
    assert names in str(error.value)


def test_model_type_tensorflow_stands_for_the_platform() -> None:
    (model,) = config_files.parse_model_server_config(
        "model_config_list { config { name: 'a' base_path: '/a' model_type: TENSORFLOW } }"
    ).config
    assert model.model_platform == "tensorflow"


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"--model_config_file: cannot read '.*missing': No such file"):
        config_files.read_model_server_config(tmp_path / "missing")


def test_monitoring_config() -> None:
    # g3doc/serving_config.md, "Monitoring Configuration"
    text = 'prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'
    assert config_files.parse_monitoring_config(text) == config_files.Monitoring(True, "/monitoring/prometheus/metrics")
    assert (
        config_files.parse_monitoring_config("prometheus_config { enable: true }").path
        == "/monitoring/prometheus/metrics"
    )
    assert not config_files.parse_monitoring_config("").enabled
    with pytest.raises(ConfigFileError, match="must start with '/'"):
        config_files.parse_monitoring_config("prometheus_config { enable: true path: 'metrics' }")
    with pytest.raises(ConfigFileError, match=r"^Error parsing text-format tensorflow\.serving\.MonitoringConfig: 1:"):
        config_files.parse_monitoring_config("prometheus_config { enabled: true }")


def test_batching_parameters_map_onto_the_batcher() -> None:
    # g3doc/serving_config.md, "Batching Configuration"
    text = """
    max_batch_size { value: 128 }
    batch_timeout_micros { value: 0 }
    max_enqueued_batches { value: 1000000 }
    num_batch_threads { value: 8 }
    """
    batching = config_files.parse_batching_parameters(text)
    assert batching.settings == {"max_batch_size": 128, "batch_timeout_us": 0, "max_queue": 128_000_000}
    assert batching.ignored == ("num_batch_threads",)


def test_allowed_batch_sizes_follow_tf_servings_rules() -> None:
    batching = config_files.parse_batching_parameters(
        "allowed_batch_sizes: 8 allowed_batch_sizes: 32 pad_variable_length_inputs: true"
    )
    assert batching.settings == {"max_batch_size": 32}
    assert "pad_variable_length_inputs" in batching.ignored
    assert any(name.startswith("allowed_batch_sizes") for name in batching.ignored)
    with pytest.raises(ConfigFileError, match="must equal max_batch_size"):
        config_files.parse_batching_parameters(
            "max_batch_size { value: 64 } allowed_batch_sizes: 8 allowed_batch_sizes: 32"
        )
    with pytest.raises(ConfigFileError, match="increasing"):
        config_files.parse_batching_parameters("allowed_batch_sizes: 32 allowed_batch_sizes: 8")
    with pytest.raises(ConfigFileError, match="max_batch_size must be at least 1"):
        config_files.parse_batching_parameters("max_batch_size { value: 0 }")
    with pytest.raises(
        ConfigFileError, match=r"^Error parsing text-format tensorflow\.serving\.BatchingParameters: 1:"
    ):
        config_files.parse_batching_parameters("max_batch_size: 128")


def test_ssl_config() -> None:
    text = (
        'server_key: "-----BEGIN PRIVATE KEY-----\\nk\\n"\n'
        'server_cert: "-----BEGIN CERTIFICATE-----\\nc\\n"\n'
        'custom_ca: "ca"\nclient_verify: true\n'
    )
    tls = config_files.parse_ssl_config(text)
    assert tls == config_files.Tls("-----BEGIN PRIVATE KEY-----\nk\n", "-----BEGIN CERTIFICATE-----\nc\n", "ca", True)
    with pytest.raises(ConfigFileError, match="server_cert must hold the PEM text"):
        config_files.parse_ssl_config('server_key: "k"')
    with pytest.raises(ConfigFileError, match="client_verify needs custom_ca"):
        config_files.parse_ssl_config('server_key: "k" server_cert: "c" client_verify: true')


def test_the_messages_live_in_a_private_pool() -> None:
    assert messages.MonitoringConfig.DESCRIPTOR.file.pool is messages.POOL
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
