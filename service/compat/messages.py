"""TF Serving's config messages that tensorflow-serving-api does not ship (MonitoringConfig, BatchingParameters,
SSLConfig), built from ``protos/tfserving_config.binpb`` in a private descriptor pool (see codecs/proto_pool.py)."""

from __future__ import annotations

from service.codecs import proto_pool

PROTO_FILE = "tfserving_config.proto"
DESCRIPTOR_SET = "tfserving_config.binpb"

# Immutable vocabulary, like a dtype table: built once when the module is imported.
POOL, FILE = proto_pool.load_pool("service.compat", DESCRIPTOR_SET, PROTO_FILE)

MonitoringConfig = proto_pool.message_class(POOL, "tensorflow.serving.MonitoringConfig")
BatchingParameters = proto_pool.message_class(POOL, "tensorflow.serving.BatchingParameters")
SSLConfig = proto_pool.message_class(POOL, "tensorflow.serving.SSLConfig")
