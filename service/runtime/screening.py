"""Screening a SavedModel's graph, before TensorFlow loads it, for ops that reach outside the model.

A SavedModel is a program: its graph can read and write files, run Python, end the process or talk to other
machines, and rtserve would run all of that with its own file system, credentials and network. Every op of the
``serve`` meta graph is looked at once, top-level nodes and every function of the library (a signature's body,
its branches and loop bodies are library functions), and a model that uses a refused op does not load unless
``RTSERVE_ALLOWED_FILE_OPS`` names it.

Every SavedModel carries checkpoint ops (SaveV2, RestoreV2, MergeV2Checkpoints) in its own saver, the part of the
graph that ``saver_def`` points at. Those stay allowed there, and only there: the same ops anywhere else, or a
saver that something other than the saver can call, are refused like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ALLOW_SETTING = "RTSERVE_ALLOWED_FILE_OPS"
# PrintV2 streams that stay inside the process's own output.
SAFE_PRINT_STREAMS = frozenset({"stdout", "stderr", "log(info)", "log(warning)", "log(error)"})
# DecodeProtoV2/EncodeProto read their message types from the binary itself unless pointed at a file.
LOCAL_DESCRIPTORS = "local://"


def _prints_to_file(node: Any) -> bool:
    stream = node.attr["output_stream"].s.decode("utf-8", "replace") if "output_stream" in node.attr else "stderr"
    return stream not in SAFE_PRINT_STREAMS


def _has_debug_urls(node: Any) -> bool:
    return "debug_urls" in node.attr and len(node.attr["debug_urls"].list.s) > 0


def _reads_descriptor_file(node: Any) -> bool:
    source = node.attr["descriptor_source"].s.decode("utf-8", "replace") if "descriptor_source" in node.attr else ""
    return source not in ("", LOCAL_DESCRIPTORS)


@dataclass(frozen=True)
class OpGroup:
    """Ops refused for one reason; ``when`` narrows the refusal to nodes whose attributes make them dangerous."""

    reason: str
    ops: frozenset[str]
    when: Callable[[Any], bool] | None = None
    saver_may_use: bool = False


CHECKPOINT_OPS = frozenset(
    {"Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2", "MergeV2Checkpoints"}
)

# The denylist. Names are tf.raw_ops names (NodeDef.op), checked against TensorFlow 2.21.
REFUSED_OPS: tuple[OpGroup, ...] = (
    # Paths are tensors, so nothing short of running the graph says which file: refuse the op.
    OpGroup(
        "reads, writes or lists files",
        frozenset({"ReadFile", "WriteFile", "MatchingFiles", "FileSystemSetConfiguration", "RecordInput"}),
    ),
    # Memory-maps a region of a file named in an attribute: reads any file the process can open.
    OpGroup("maps a file into memory", frozenset({"ImmutableConst"})),
    # TF1 queue readers open the files their queue names.
    OpGroup(
        "reads files (TF1 reader)",
        frozenset(
            {
                "WholeFileReader",
                "WholeFileReaderV2",
                "TextLineReader",
                "TextLineReaderV2",
                "TFRecordReader",
                "TFRecordReaderV2",
                "FixedLengthRecordReader",
                "FixedLengthRecordReaderV2",
                "LMDBReader",
            }
        ),
    ),
    # tf.data sources and sinks backed by files, databases, caches on disk or a tf.data service on the network.
    OpGroup(
        "reads or writes files or the network (tf.data)",
        frozenset(
            {
                "TFRecordDataset",
                "TFRecordDatasetV2",
                "FixedLengthRecordDataset",
                "FixedLengthRecordDatasetV2",
                "TextLineDataset",
                "CSVDataset",
                "CSVDatasetV2",
                "ExperimentalCSVDataset",
                "LMDBDataset",
                "ExperimentalLMDBDataset",
                "SqlDataset",
                "ExperimentalSqlDataset",
                "MatchingFilesDataset",
                "ExperimentalMatchingFilesDataset",
                "CacheDataset",
                "CacheDatasetV2",
                "SnapshotDataset",
                "SnapshotDatasetV2",
                "SnapshotDatasetReader",
                "SnapshotNestedDatasetReader",
                "SnapshotChunkDataset",
                "ListSnapshotChunksDataset",
                "LoadDataset",
                "SaveDataset",
                "SaveDatasetV2",
                "DistributedSave",
                "DatasetToTFRecord",
                "ExperimentalDatasetToTFRecord",
                "DataServiceDataset",
                "DataServiceDatasetV2",
                "DataServiceDatasetV3",
                "DataServiceDatasetV4",
                "RegisterDataset",
                "RegisterDatasetV2",
            }
        ),
    ),
    # Summary writers create event files or SQLite databases under a directory given as a tensor.
    OpGroup("writes summary files", frozenset({"CreateSummaryFileWriter", "CreateSummaryDbWriter"})),
    # Vocabulary and checkpoint readers take their paths as tensors. A model with a vocabulary asset file
    # (feature columns, tf.Transform) uses InitializeTableFromTextFileV2: allow it by name for such a model.
    OpGroup(
        "reads vocabulary or checkpoint files",
        frozenset(
            {
                "InitializeTableFromTextFile",
                "InitializeTableFromTextFileV2",
                "GenerateVocabRemapping",
                "LoadAndRemapMatrix",
            }
        ),
    ),
    # The SavedModel's saver writes and reads its own variables; the same ops elsewhere read or write any path.
    OpGroup("reads or writes checkpoint files outside the model's saver", CHECKPOINT_OPS, saver_may_use=True),
    # Python callbacks cannot be serialized (they fail at run time), but a graph that names them is not a model
    # built for serving.
    OpGroup("runs Python code", frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})),
    OpGroup("ends the process", frozenset({"Abort"})),
    OpGroup("calls functions on other tasks", frozenset({"RemoteCall"})),
    # PrintV2 to stderr, stdout or the log is harmless debugging; output_stream="file://..." appends to a file.
    OpGroup("prints to a file", frozenset({"PrintV2"}), when=_prints_to_file),
    # tfdbg ops with debug_urls dump tensors to file:// paths or stream them to grpc:// servers.
    OpGroup(
        "dumps tensors to debug URLs",
        frozenset({"DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary"}),
        when=_has_debug_urls,
    ),
    OpGroup(
        "reads a protobuf descriptor file", frozenset({"DecodeProtoV2", "EncodeProto"}), when=_reads_descriptor_file
    ),
)

_GROUP_OF: Mapping[str, OpGroup] = {op: group for group in REFUSED_OPS for op in group.ops}


def refusable_ops() -> frozenset[str]:
    """Every op name the screening can refuse (what RTSERVE_ALLOWED_FILE_OPS can sensibly name)."""
    return frozenset(_GROUP_OF)


@dataclass(frozen=True)
class Finding:
    op: str
    where: str  # "the graph" or "function '<name>'"
    reason: str


def refusal_message(findings: Iterable[Finding]) -> str:
    """One line naming each refused op once (where it was first seen) and the setting that allows it."""
    first: dict[str, Finding] = {}
    for finding in findings:
        first.setdefault(finding.op, finding)
    ops = sorted(first)
    described = "; ".join(f"{op} ({first[op].reason}, in {first[op].where})" for op in ops)
    return (
        f"the graph uses ops that rtserve refuses: {described}. "
        f"If this model is trusted, allow them with {ALLOW_SETTING}={','.join(ops)}"
    )


def screen(meta_graph: Any, allowed: frozenset[str] = frozenset()) -> list[Finding]:
    """Refused ops in a SavedModel's MetaGraphDef, each with where it is; empty when the graph is clean."""
    saver_nodes, saver_functions = _saver_only_scope(meta_graph)
    findings = [
        Finding(node.op, "the graph", group.reason)
        for node in meta_graph.graph_def.node
        if (group := _refused(node, node.name in saver_nodes, allowed)) is not None
    ]
    for function in meta_graph.graph_def.library.function:
        name = function.signature.name
        in_saver = name in saver_functions
        findings += [
            Finding(node.op, f"function {name!r}", group.reason)
            for node in function.node_def
            if (group := _refused(node, in_saver, allowed)) is not None
        ]
    return findings


def _refused(node: Any, in_saver: bool, allowed: frozenset[str]) -> OpGroup | None:
    group = _GROUP_OF.get(node.op)
    if group is None or node.op in allowed or (group.saver_may_use and in_saver):
        return None
    if group.when is not None and not group.when(node):
        return None
    return group


# -- the saver's own part of the graph -----------------------------------------------------------------------


def _node_name(tensor: str) -> str:
    """'^name', 'name:0' and 'name' all name node 'name'."""
    return tensor.lstrip("^").split(":", 1)[0]


def _called_functions(node: Any, library: frozenset[str]) -> Iterator[str]:
    """Functions a node calls: as its op, or through function-valued attributes (f, then_branch, body, ...)."""
    if node.op in library:
        yield node.op
    yield from _functions_in_attrs(node.attr.values())


def _functions_in_attrs(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        if value.HasField("func"):
            yield value.func.name
            yield from _functions_in_attrs(value.func.attr.values())
        elif value.HasField("list"):
            for func in value.list.func:
                yield func.name
                yield from _functions_in_attrs(func.attr.values())


def _closure(roots: Iterable[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
    """``roots`` and everything reachable from them along ``edges`` (names without an entry are skipped)."""
    seen: set[str] = set()
    stack = [root for root in roots if root in edges]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += [target for target in edges[name] if target in edges and target not in seen]
    return seen


def _saver_only_scope(meta_graph: Any) -> tuple[set[str], set[str]]:
    """Top-level nodes and functions that only the saver (``saver_def``'s save and restore ops) reaches.

    Anything else that reaches them (another node, a signature, an init op, the object graph, another function)
    takes them out of the saver's scope, so a signature cannot borrow the saver to write or read a path.
    """
    saver = meta_graph.saver_def
    saver_roots = [_node_name(name) for name in (saver.save_tensor_name, saver.restore_op_name) if name]
    if not saver_roots:
        return set(), set()
    graph = meta_graph.graph_def
    inputs = {node.name: [_node_name(source) for source in node.input] for node in graph.node}
    saver_top = _closure(saver_roots, inputs)
    saver_nodes = saver_top - _closure(_other_top_level_roots(meta_graph, saver_top), inputs)

    library = frozenset(function.signature.name for function in graph.library.function)
    calls = {
        f.signature.name: {c for n in f.node_def for c in _called_functions(n, library)} for f in graph.library.function
    }
    top_calls = {node.name: set(_called_functions(node, library)) for node in graph.node}
    saver_functions = _closure((f for name in saver_nodes for f in top_calls[name]), calls)
    other_roots = {f for name, called in top_calls.items() if name not in saver_nodes for f in called}
    other_roots |= library - saver_functions  # any function can be loaded and called as a concrete function
    other_roots |= set(meta_graph.object_graph_def.concrete_functions.keys())
    return saver_nodes, saver_functions - _closure(other_roots, calls)


def _other_top_level_roots(meta_graph: Any, saver_top: set[str]) -> list[str]:
    """What TensorFlow may run at the top level besides the saver: other nodes, signatures, collected ops."""
    roots = [node.name for node in meta_graph.graph_def.node if node.name not in saver_top]
    for signature in meta_graph.signature_def.values():
        for info in [*signature.inputs.values(), *signature.outputs.values()]:
            roots += [_node_name(name) for name in _tensor_names(info)]
    for collection in meta_graph.collection_def.values():
        roots += [_node_name(name) for name in collection.node_list.value]
    return roots


def _tensor_names(info: Any) -> Iterator[str]:
    """The graph tensors a TensorInfo names, whatever its encoding (dense, sparse or composite)."""
    encoding = info.WhichOneof("encoding")
    if encoding == "name":
        yield info.name
    elif encoding == "coo_sparse":
        sparse = info.coo_sparse
        yield from (sparse.values_tensor_name, sparse.indices_tensor_name, sparse.dense_shape_tensor_name)
    elif encoding == "composite_tensor":
        for component in info.composite_tensor.components:
            yield from _tensor_names(component)
