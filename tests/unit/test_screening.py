"""Graph screening: SavedModels that use file, process or network ops are refused before TensorFlow loads them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorflow.core.framework import attr_value_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from modelfactory import (
    prints_model,
    reads_file_in_branch_model,
    saves_checkpoint_model,
    tf1_reads_file_model,
    unsupported_dtype_module,
    writes_file_model,
)
from service.errors import ModelLoadError
from service.runtime.screening import REFUSED_OPS, refusable_ops, screen
from service.runtime.tensorflow import TensorFlowLoader

SETTING = "RTSERVE_ALLOWED_FILE_OPS"


def meta_graph_of(folder: Path) -> Any:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0]


def refused_ops(meta_graph: Any, allowed: frozenset[str] = frozenset()) -> set[str]:
    return {finding.op for finding in screen(meta_graph, allowed)}


def assert_refused(folder: Path, op: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        TensorFlowLoader()(folder)
    message = caught.value.message
    assert op in message
    assert f"{SETTING}={op}" in message
    assert "\n" not in message


# -- real SavedModels ----------------------------------------------------------------------------------------


def test_every_fixture_model_is_clean(
    keras_model_dir: Path,
    multi_signature_model_dir: Path,
    classify_regress_model_dir: Path,
    demo_model_dir: Path,
    tmp_path: Path,
) -> None:
    """TF2 modules, a Keras export and a TF1 builder model all carry SaveV2/RestoreV2 in their saver: allowed."""
    mixed = unsupported_dtype_module(tmp_path / "mixed" / "1")
    for folder in (keras_model_dir, multi_signature_model_dir, classify_regress_model_dir, demo_model_dir, mixed):
        meta_graph = meta_graph_of(folder)
        ops = {node.op for node in meta_graph.graph_def.node}
        ops |= {node.op for f in meta_graph.graph_def.library.function for node in f.node_def}
        assert {"SaveV2", "RestoreV2"} <= ops, folder  # the saver is there...
        assert screen(meta_graph) == [], folder  # ...and allowed


def test_reading_a_file_is_refused_before_loading(reads_file_model_dir: Path) -> None:
    assert_refused(reads_file_model_dir, "ReadFile")


def test_allowlisted_op_loads_and_runs(reads_file_model_dir: Path) -> None:
    servable = TensorFlowLoader(["ReadFile"])(reads_file_model_dir)
    try:
        outputs = servable.run("serving_default", {"x": np.array([1.0, 2.0], np.float32)})
        np.testing.assert_allclose(outputs["y"], [6.0, 7.0])  # the 5-byte file was read
    finally:
        servable.close()


def test_writing_a_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    folder = writes_file_model(tmp_path / "writer" / "1", str(target))
    assert_refused(folder, "WriteFile")
    assert not target.exists()
    # The same model allowed does write on its warm-up: the refusal above is what kept the file away.
    servable = TensorFlowLoader(["WriteFile"])(folder)
    servable.warm_up((1,))
    servable.close()
    assert target.exists()


def test_an_op_inside_a_branch_function_is_found(tmp_path: Path) -> None:
    folder = reads_file_in_branch_model(tmp_path / "branch" / "1", str(tmp_path / "x"))
    assert_refused(folder, "ReadFile")
    wheres = [finding.where for finding in screen(meta_graph_of(folder))]
    assert wheres
    assert all(where.startswith("function 'cond_false") for where in wheres), wheres


def test_a_tf1_graph_node_is_found(tmp_path: Path) -> None:
    folder = tf1_reads_file_model(tmp_path / "tf1" / "1", str(tmp_path / "x"))
    assert_refused(folder, "ReadFile")
    assert [f.where for f in screen(meta_graph_of(folder))] == ["the graph"]


def test_print_to_a_file_is_refused_print_to_stderr_is_not(tmp_path: Path) -> None:
    to_file = prints_model(tmp_path / "file" / "1", f"file://{tmp_path / 'printed.txt'}")
    assert_refused(to_file, "PrintV2")
    to_stderr = prints_model(tmp_path / "stderr" / "1", sys.stderr)
    assert screen(meta_graph_of(to_stderr)) == []
    TensorFlowLoader()(to_stderr).close()


def test_checkpoint_ops_outside_the_saver_are_refused(tmp_path: Path) -> None:
    folder = saves_checkpoint_model(tmp_path / "saver" / "1", str(tmp_path / "ckpt"))
    assert_refused(folder, "SaveV2")
    assert refused_ops(meta_graph_of(folder), frozenset({"SaveV2"})) == set()


def test_a_signature_that_calls_the_saver_takes_it_out_of_the_saver_scope(multi_signature_model_dir: Path) -> None:
    meta_graph = meta_graph_of(multi_signature_model_dir)
    library = meta_graph.graph_def.library.function
    save = next(f.signature.name for f in library if "traced_save" in f.signature.name)
    serve = next(f for f in library if f.signature.name.startswith("__inference_signature_wrapper_serve"))
    call = serve.node_def.add(name="borrowed_saver", op="StatefulPartitionedCall")
    call.attr["f"].func.name = save
    assert refused_ops(meta_graph) == {"SaveV2", "MergeV2Checkpoints"}


def test_a_tf1_signature_that_fetches_the_save_op_is_refused(classify_regress_model_dir: Path) -> None:
    meta_graph = meta_graph_of(classify_regress_model_dir)
    save_tensor = meta_graph.saver_def.save_tensor_name
    meta_graph.signature_def["regress"].outputs["saved"].name = save_tensor
    assert "SaveV2" in refused_ops(meta_graph)


def test_a_model_without_a_saver_may_not_use_checkpoint_ops(multi_signature_model_dir: Path) -> None:
    meta_graph = meta_graph_of(multi_signature_model_dir)
    meta_graph.ClearField("saver_def")
    assert refused_ops(meta_graph) == {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}


# -- attribute conditions on synthetic graphs ----------------------------------------------------------------


def graph_with(op: str, **attrs: attr_value_pb2.AttrValue) -> Any:
    meta_graph = meta_graph_pb2.MetaGraphDef()
    node = node_def_pb2.NodeDef(name="n", op=op)
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    meta_graph.graph_def.node.append(node)
    return meta_graph


def strings(*values: str) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(s=[v.encode() for v in values]))


def text(value: str) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(s=value.encode())


@pytest.mark.parametrize(
    ("graph", "refused"),
    [
        (lambda: graph_with("PrintV2", output_stream=text("log(warning)")), False),
        (lambda: graph_with("PrintV2", output_stream=text("file:///etc/cron.d/x")), True),
        (lambda: graph_with("DebugIdentity"), False),
        (lambda: graph_with("DebugIdentity", debug_urls=strings("file:///tmp/dump")), True),
        (lambda: graph_with("DebugNumericSummary", debug_urls=strings("grpc://10.0.0.1:6064")), True),
        (lambda: graph_with("DecodeProtoV2", descriptor_source=text("local://")), False),
        (lambda: graph_with("DecodeProtoV2", descriptor_source=text("/etc/descriptors.bin")), True),
        (lambda: graph_with("ImmutableConst", memory_region_name=text("/etc/shadow")), True),
        (lambda: graph_with("EagerPyFunc"), True),
        (lambda: graph_with("Abort"), True),
        (lambda: graph_with("TFRecordDataset"), True),
        (lambda: graph_with("InitializeTableFromTextFileV2"), True),
        (lambda: graph_with("MatMul"), False),
    ],
)
def test_attribute_conditions(graph: Callable[[], Any], refused: bool) -> None:
    assert bool(screen(graph())) is refused


def test_denylist_names_are_real_ops_and_groups_do_not_overlap() -> None:
    import tensorflow as tf

    names = [op for group in REFUSED_OPS for op in group.ops]
    assert len(names) == len(set(names))
    assert {op for op in names if not hasattr(tf.raw_ops, op)} == set()
    assert all(group.reason for group in REFUSED_OPS)


def test_allowlisting_an_op_that_is_never_refused_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        TensorFlowLoader(["ReadFile", "MatMull"])
    assert "MatMull" in caplog.text
    assert "ReadFile" not in caplog.text
    assert "ReadFile" in refusable_ops()
