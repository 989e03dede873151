"""The screen's allowlist lets real models through: Keras layers, tf.Module graphs and TF1 builder graphs.

Each model of ``modelfactory.REALISTIC_MODELS`` is built once for the module (small layers: a few seconds in all),
screened, and loaded and warmed up by the real loader with the default settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow.core.protobuf import saved_model_pb2

from modelfactory import REALISTIC_MODELS
from service.runtime.runner import RunnerChoice
from service.runtime.screening import refusal_message, screen
from service.runtime.tensorflow import TensorFlowLoader


@pytest.fixture(scope="module")
def realistic_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("realistic")
    return {name: build(root / name / "1") for name, build in REALISTIC_MODELS.items()}


def ops_of(folder: Path) -> set[str]:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


@pytest.mark.parametrize("name", sorted(REALISTIC_MODELS))
def test_realistic_model_passes_the_screen_and_loads(
    realistic_models: dict[str, Path], name: str, runner: RunnerChoice
) -> None:
    folder = realistic_models[name]
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    findings = screen(proto.meta_graphs[0])
    assert findings == [], refusal_message(findings)
    servable = TensorFlowLoader(runner=runner)(folder)
    try:
        servable.warm_up((1, 2))
    finally:
        servable.close()


def test_the_realistic_models_cover_what_they_claim(realistic_models: dict[str, Path]) -> None:
    """The kernels each layer brings are in the graphs, so a pass above means these ops are allowed."""
    expected = {
        "keras_dense": {"MatMul", "Relu", "Erfc", "Rsqrt", "Softmax"},
        "keras_conv": {"Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool"},
        "keras_recurrent": {"GatherV2", "While", "TensorListSetItem", "Tanh", "Sigmoid"},
        "keras_attention": {"BatchMatMulV2", "Softmax"},
        "keras_preprocessing": {"HashTableV2", "LookupTableFindV2", "StringToHashBucketFast", "Bucketize"},
        "example_parsing": {
            "ParseExampleV2",
            "SparseToDense",
            "LookupTableFindV2",
            "StringLower",
            "UnsortedSegmentSum",
        },
        "control_flow": {"StatelessWhile", "TensorListSetItem", "ResizeBilinear", "StringSplitV2", "SparseReduceSum"},
        "decodes_images": {"DecodeImage", "DecodeBase64"},
        "tf1_graph": {"VariableV2", "HashTableV2", "Softmax", "Enter", "Exit", "Switch", "Merge", "NextIteration"},
    }
    assert set(expected) == set(REALISTIC_MODELS)
    for name, ops in expected.items():
        assert ops <= ops_of(realistic_models[name]), (name, ops - ops_of(realistic_models[name]))
