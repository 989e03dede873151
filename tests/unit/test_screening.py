"""Graph screening: SavedModels whose ops are outside the allowed op families are refused before TensorFlow loads
them, and so are the ones that reach files, processes or the network however they are dressed up."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorflow.core.framework import attr_value_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from modelfactory import (
    dataset_reads_file_model,
    dataset_saves_model,
    prints_model,
    reads_file_in_branch_model,
    saves_checkpoint_model,
    tf1_reads_file_model,
    unlisted_op_model,
    unsupported_dtype_module,
    writes_file_model,
)
from service.errors import ModelLoadError
from service.runtime.op_families import ALLOWED, REFUSED, UNKNOWN_REASON, registered_ops
from service.runtime.runner import RunnerChoice
from service.runtime.screening import ALLOWED_OPS, CONDITIONS, refusable_ops, screen
from service.runtime.tensorflow import TensorFlowLoader

SETTING = "RTSERVE_ALLOWED_FILE_OPS"


def meta_graph_of(folder: Path) -> Any:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0]


def refused_ops(meta_graph: Any, allowed: frozenset[str] = frozenset()) -> set[str]:
    return {finding.op for finding in screen(meta_graph, allowed)}


def assert_refused(folder: Path, op: str) -> str:
    """The load fails before TensorFlow sees the graph, naming ``op`` and the setting; returns the message."""
    with pytest.raises(ModelLoadError) as caught:
        TensorFlowLoader()(folder)
    message = caught.value.message
    assert f"{op} (" in message
    assert SETTING in message
    assert op in message.rsplit(f"{SETTING}=", 1)[1].split(",")
    assert "\n" not in message
    return message


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


def test_allowlisted_op_loads_and_runs(reads_file_model_dir: Path, runner: RunnerChoice) -> None:
    servable = TensorFlowLoader(["ReadFile"], runner=runner)(reads_file_model_dir)
    try:
        outputs = servable.run("serving_default", {"x": np.array([1.0, 2.0], np.float32)})
        np.testing.assert_allclose(outputs["y"], [6.0, 7.0])  # the 5-byte file was read
    finally:
        servable.close()


def test_writing_a_file_is_refused_and_nothing_is_written(tmp_path: Path, runner: RunnerChoice) -> None:
    target = tmp_path / "written.txt"
    folder = writes_file_model(tmp_path / "writer" / "1", str(target))
    assert_refused(folder, "WriteFile")
    assert not target.exists()
    # The same model allowed does write on its warm-up: the refusal above is what kept the file away.
    servable = TensorFlowLoader(["WriteFile"], runner=runner)(folder)
    servable.warm_up((1,))
    servable.close()
    assert target.exists()


# The escape of issue 9: a tf.data graph carried as a string constant and run with DatasetFromGraph.
DATASET_OPS = ["DatasetFromGraph", "DatasetToSingleElement", "TakeDataset"]  # what the signature itself names
SECRET = "API_KEY=s3cr3t-key-0042"


def test_a_serialized_dataset_that_reads_a_secret_is_refused_before_loading(
    tmp_path: Path, runner: RunnerChoice
) -> None:
    secret = tmp_path / "api-keys.txt"
    secret.write_text(SECRET + "\n")
    folder = dataset_reads_file_model(tmp_path / "leaker" / "1", str(secret))
    message = assert_refused(folder, "DatasetFromGraph")
    assert "rebuilds a graph" in message
    assert "TextLineDataset" not in message  # it hides inside the string: the screen never sees it...
    assert SECRET not in message
    # ...and does what the issue says once the ops that run it are allowed: the refusal is what kept it away.
    servable = TensorFlowLoader(DATASET_OPS, runner=runner)(folder)
    try:
        assert servable.run("serving_default", {"x": np.array([1.0], np.float32)})["y"].tolist() == [SECRET.encode()]
    finally:
        servable.close()


def test_a_serialized_dataset_that_writes_a_snapshot_is_refused_and_nothing_is_written(
    tmp_path: Path, runner: RunnerChoice
) -> None:
    target = tmp_path / "written-by-save-dataset"
    folder = dataset_saves_model(tmp_path / "snapshotter" / "1", str(target))
    assert not target.exists()
    assert_refused(folder, "DatasetFromGraph")
    assert not target.exists()
    servable = TensorFlowLoader(DATASET_OPS, runner=runner)(
        folder
    )  # allowed, its warm-up writes the snapshot (SaveDatasetV2)
    servable.warm_up((1,))
    servable.close()
    assert (target / "snapshot.metadata").exists()


@pytest.mark.parametrize(("attr", "op"), [("f", "ReadFile"), ("body", "WriteFile")])
def test_an_op_named_as_a_function_to_call_is_screened(multi_signature_model_dir: Path, attr: str, op: str) -> None:
    """A function attribute that names no library function names an op; it is judged like a node of that op.

    (TensorFlow's call ops look such names up among the library's functions; the screen does not rely on it.)
    """
    meta_graph = meta_graph_of(multi_signature_model_dir)
    serve = next(f for f in meta_graph.graph_def.library.function if f.signature.name.startswith("__inference_serve"))
    call = serve.node_def.add(name="primitive_call", op="StatefulPartitionedCall" if attr == "f" else "While")
    call.attr[attr].func.name = op
    assert [(f.op, f.where) for f in screen(meta_graph)] == [(op, f"function {serve.signature.name!r}")]
    assert screen(meta_graph, frozenset({op})) == []


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


def test_print_to_a_file_is_refused_print_to_stderr_is_not(tmp_path: Path, runner: RunnerChoice) -> None:
    to_file = prints_model(tmp_path / "file" / "1", f"file://{tmp_path / 'printed.txt'}")
    assert_refused(to_file, "PrintV2")
    to_stderr = prints_model(tmp_path / "stderr" / "1", sys.stderr)
    assert screen(meta_graph_of(to_stderr)) == []
    TensorFlowLoader(runner=runner)(to_stderr).close()


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
        (lambda: graph_with("PrintV2"), False),  # the default stream is stderr
        (lambda: graph_with("DatasetFromGraph"), True),
        (lambda: graph_with("DeserializeIterator"), True),
        (lambda: graph_with("IteratorFromStringHandleV2"), True),
        (lambda: graph_with("XlaCallModule"), True),
        (lambda: graph_with("RpcCall"), True),
        (lambda: graph_with("CollectiveReduceV2"), True),
        (lambda: graph_with("_Send"), True),
        (lambda: graph_with("Empty"), True),
        (lambda: graph_with("NotAnOpAnyoneRegistered"), True),
    ],
)
def test_attribute_conditions(graph: Callable[[], Any], refused: bool) -> None:
    assert bool(screen(graph())) is refused


def test_family_names_are_registered_ops_and_families_do_not_overlap() -> None:
    registered = registered_ops()
    names = [op for family in (*ALLOWED, *REFUSED) for op in family.ops]
    assert len(names) == len(set(names))  # no op is both allowed and refused, or in two families
    assert set(names) - registered == set()  # a typo would allow nothing and refuse nothing
    assert set(CONDITIONS) <= ALLOWED_OPS
    assert all(family.name and family.reason for family in (*ALLOWED, *REFUSED))


# Every registered op whose name says it runs datasets or iterators, snapshots, sessions' handles, RPCs,
# collectives, cross-device transfers, XLA or TPU programs, Python, readers, queues, files or summaries.
ESCAPE_CLASSES = re.compile(
    r"Dataset|Iterator|Snapshot|Session|Rpc|Collective|Nccl|Send|Recv|Xla|TPU|Tpu|DTensor|Mesh|PyFunc|Reader"
    r"|Queue|File|Summary(Writer|Db)|Write.*Summary|Mlir|Remote|Infeed|Outfeed|Barrier|Accumulator|Stage"
)

NAMES_ALIKE = {"Snapshot", "ShardedFilename", "ShardedFilespec"}


def test_no_op_of_an_escape_class_is_allowed() -> None:
    """Enumerates TensorFlow's registered ops, so an op added to any of these classes is caught too."""
    # Names that match but are not of the class: a copy of a tensor, and string formatting of file names.
    matching = {op for op in registered_ops() if ESCAPE_CLASSES.search(op)} - NAMES_ALIKE
    assert len(matching) > 500  # the pattern still finds the classes (511 in TensorFlow 2.21)
    assert matching & ALLOWED_OPS == set()
    named = "DatasetFromGraph DeserializeIterator IteratorFromStringHandleV2 RpcCall RpcServer RpcClient"
    named += " CollectiveReduceV2 _Send _Recv XlaCallModule SaveDatasetV2 TextLineDataset"
    for op in named.split():
        assert op in matching, op


def test_an_op_in_no_family_is_refused_and_the_setting_allows_it(tmp_path: Path, runner: RunnerChoice) -> None:
    """Fact is a real registered op with a CPU kernel that no family lists and no reason names."""
    assert "Fact" in registered_ops()
    assert "Fact" not in ALLOWED_OPS | {op for family in REFUSED for op in family.ops}
    folder = unlisted_op_model(tmp_path / "fact" / "1")
    assert UNKNOWN_REASON in assert_refused(folder, "Fact")
    servable = TensorFlowLoader(["Fact"], runner=runner)(folder)
    try:
        np.testing.assert_allclose(servable.run("serving_default", {"x": np.array([3.0], np.float32)})["y"], [3.0])
    finally:
        servable.close()


def test_allowlisting_an_op_that_is_never_refused_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        TensorFlowLoader(["ReadFile", "MatMull"])
    assert "MatMull" in caplog.text
    assert "ReadFile" not in caplog.text
    assert "ReadFile" in refusable_ops()
