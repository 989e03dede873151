"""Screening a SavedModel's graph, before TensorFlow loads it, against an allowlist of op families.

A SavedModel is a program: its graph can read and write files, run Python, end the process or talk to other
machines, and rtserve would run all of that with its own file system, credentials and network. Every op of the
``serve`` meta graph is looked at once, top-level nodes and every function of the library (a signature's body,
its branches and loop bodies are library functions), and also every op that an attribute names as a function to
call. An op loads only if it is in one of the families of runtime/op_families.py (ops that compute on tensors in
memory) or ``RTSERVE_ALLOWED_FILE_OPS`` names it; everything else is refused, with the reason op_families.py
gives for the ops known to reach outside the model and "not in an op family" for the rest.

A few allowed ops are refused when their attributes point outside the model (PrintV2 to a file, debug ops with
URLs, proto ops reading a descriptor file). Every SavedModel carries checkpoint ops (SaveV2, RestoreV2,
MergeV2Checkpoints) in its own saver, the part of the graph that ``saver_def`` points at. Those are allowed
there, and only there: the same ops anywhere else, or a saver that something other than the saver can call, are
refused like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from service.runtime.op_families import ALLOWED, CHECKPOINTS, REFUSED, UNKNOWN_REASON, registered_ops

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
class Condition:
    """An allowed op that is refused, for ``reason``, on a node whose attributes make it reach outside."""

    reason: str
    when: Callable[[Any], bool]


_DEBUG_URLS = Condition("dumps tensors to debug URLs", _has_debug_urls)
_DESCRIPTOR_FILE = Condition("reads a protobuf descriptor file", _reads_descriptor_file)
CONDITIONS: Mapping[str, Condition] = {
    # PrintV2 to stderr, stdout or the log is harmless debugging; output_stream="file://..." appends to a file.
    "PrintV2": Condition("prints to a file", _prints_to_file),
    # tfdbg ops with debug_urls dump tensors to file:// paths or stream them to grpc:// servers.
    **dict.fromkeys(
        ("DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary"), _DEBUG_URLS
    ),
    "DecodeProtoV2": _DESCRIPTOR_FILE,
    "EncodeProto": _DESCRIPTOR_FILE,
}

ALLOWED_OPS = frozenset().union(*(family.ops for family in ALLOWED))
_REASON: Mapping[str, str] = {op: family.reason for family in REFUSED for op in family.ops}


def refusable_ops() -> frozenset[str]:
    """Every registered op the screen can refuse (what RTSERVE_ALLOWED_FILE_OPS can sensibly name)."""
    return registered_ops() - (ALLOWED_OPS - CONDITIONS.keys())


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
    library = frozenset(function.signature.name for function in meta_graph.graph_def.library.function)
    findings = [
        Finding(op, "the graph", reason)
        for node in meta_graph.graph_def.node
        for op, reason in _refused(node, library, node.name in saver_nodes, allowed)
    ]
    for function in meta_graph.graph_def.library.function:
        name = function.signature.name
        findings += [
            Finding(op, f"function {name!r}", reason)
            for node in function.node_def
            for op, reason in _refused(node, library, name in saver_functions, allowed)
        ]
    return findings


def _refused(node: Any, library: frozenset[str], in_saver: bool, allowed: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(op, reason) for the node's op and each op that an attribute names as a function to call, if refused.

    A call of a library function is fine (the function is screened on its own); a function attribute naming
    anything else names an op, which gets the same judgement as a node of that op.
    """
    uses = [] if node.op in library else [(node.op, node)]
    funcs = _funcs_in_attrs(node.attr.values())
    uses += [(func.name, func) for func in funcs if func.name and func.name not in library]  # "": calls nothing
    for op, attrs in uses:
        reason = _refusal(op, attrs, in_saver, allowed)
        if reason is not None:
            yield op, reason


def _refusal(op: str, attrs: Any, in_saver: bool, allowed: frozenset[str]) -> str | None:
    """Why ``op`` is refused (``attrs`` holds its attributes), or None when it may run."""
    if op in allowed:
        return None
    if op in CHECKPOINTS.ops:
        return None if in_saver else CHECKPOINTS.reason
    condition = CONDITIONS.get(op)
    if condition is not None and condition.when(attrs):
        return condition.reason
    if op in ALLOWED_OPS:
        return None
    return _REASON.get(op, UNKNOWN_REASON)


# -- the saver's own part of the graph -----------------------------------------------------------------------


def _node_name(tensor: str) -> str:
    """'^name', 'name:0' and 'name' all name node 'name'."""
    return tensor.lstrip("^").split(":", 1)[0]


def _called_functions(node: Any, library: frozenset[str]) -> Iterator[str]:
    """Functions a node calls: as its op, or through function-valued attributes (f, then_branch, body, ...)."""
    if node.op in library:
        yield node.op
    yield from (func.name for func in _funcs_in_attrs(node.attr.values()))


def _funcs_in_attrs(values: Iterable[Any]) -> Iterator[Any]:
    """Every NameAttrList in attribute values, nested ones (a function passed to a function) included."""
    for value in values:
        funcs = [value.func] if value.HasField("func") else list(value.list.func) if value.HasField("list") else []
        for func in funcs:
            yield func
            yield from _funcs_in_attrs(func.attr.values())


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
