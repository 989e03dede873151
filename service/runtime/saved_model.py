"""Reading a SavedModel's protobuf: its ``serve`` meta graph and the signatures it describes.

Signatures are described from ``saved_model.pb`` itself, which holds the exact names, dtypes, shapes and method
names that TF Serving reports; both signature runners serve what is described here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from service.tensors import SignatureSpec, TensorSpec, dtype_from_tf_name

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
FINGERPRINT_PB = "fingerprint.pb"


class SavedModelError(Exception):
    """A problem found while reading the SavedModel files; its message is the cause shown to the operator."""


# A version with nothing to serve, whether no signature was described or none of them can be called.
NO_SERVABLE_SIGNATURE = "no servable signature with supported dtypes"


def read_saved_model(folder: Path) -> Any:
    """The SavedModel protobuf of a version folder (binary or text format, as TensorFlow itself accepts)."""
    binary, text = folder / SAVED_MODEL_PB, folder / SAVED_MODEL_PBTXT
    if not folder.is_dir():
        raise SavedModelError("the folder does not exist")
    if not binary.is_file() and not text.is_file():
        raise SavedModelError(f"no {SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT} in the folder")
    proto = saved_model_pb2.SavedModel()
    try:
        if binary.is_file():
            proto.ParseFromString(binary.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse(text.read_text(encoding="utf-8"), proto)
    except OSError as error:
        raise SavedModelError(f"cannot read the SavedModel file ({type(error).__name__}: {error})") from error
    except Exception as error:  # protobuf's DecodeError/ParseError, or text that is not UTF-8
        raise SavedModelError(f"the SavedModel file is not a valid SavedModel protobuf ({error})") from error
    return proto


def serve_meta_graph(proto: Any) -> Any:
    """The meta graph tagged exactly ``serve``, the one tf.saved_model.load(tags=["serve"]) picks."""
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {SERVE_TAG}:
            return meta_graph
    found = sorted("+".join(sorted(mg.meta_info_def.tags)) or "(none)" for mg in proto.meta_graphs)
    raise SavedModelError(f"no meta graph tagged {SERVE_TAG!r} (tag sets: {', '.join(found) or 'none'})")


def _tensor_spec(key: str, info: Any) -> TensorSpec:
    """A TensorInfo as a TensorSpec; KeyError when its dtype or encoding is not supported."""
    if info.WhichOneof("encoding") != "name":
        raise KeyError(f"{key!r} is a {info.WhichOneof('encoding')} tensor")
    dtype = dtype_from_tf_name(types_pb2.DataType.Name(info.dtype))
    proto_shape = info.tensor_shape
    shape = None if proto_shape.unknown_rank else tuple(int(dim.size) for dim in proto_shape.dim)
    return TensorSpec(name=key, dtype=dtype, shape=shape, tensor_name=str(info.name))


def _signature_spec(name: str, signature_def: Any) -> SignatureSpec:
    def specs(tensors: Any) -> dict[str, TensorSpec]:
        return {key: _tensor_spec(key, tensors[key]) for key in sorted(tensors)}

    return SignatureSpec(
        name=name,
        method_name=str(signature_def.method_name),
        inputs=specs(signature_def.inputs),
        outputs=specs(signature_def.outputs),
    )


def describe_meta_graph(folder: Path, meta_graph: Any) -> dict[str, SignatureSpec]:
    signatures: dict[str, SignatureSpec] = {}
    for name in sorted(meta_graph.signature_def):
        if name.startswith("__"):  # TF's own entries such as __saved_model_init_op are not servable
            continue
        try:
            signatures[name] = _signature_spec(name, meta_graph.signature_def[name])
        except KeyError as error:
            log.warning("%s: skipping signature %r: %s", folder, name, error.args[0])
    return signatures


def describe_saved_model(folder: Path) -> dict[str, SignatureSpec]:
    """The servable signatures of a SavedModel's ``serve`` meta graph, read from its protobuf alone.

    Signatures with dtypes or tensor encodings rtserve cannot carry are skipped with a warning.
    """
    folder = Path(folder)
    return describe_meta_graph(folder, serve_meta_graph(read_saved_model(folder)))


def set_signature_methods(saved_model_dir: Path, methods: Mapping[str, str]) -> None:
    """Set signature method names (e.g. classify) in saved_model.pb, as tf.saved_model.save writes predict.

    The stale fingerprint.pb, if any, is removed.
    """
    path = Path(saved_model_dir) / SAVED_MODEL_PB
    proto = read_saved_model(Path(saved_model_dir))
    missing = set(methods)
    for meta_graph in proto.meta_graphs:
        for name, method in methods.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method
                missing.discard(name)
    if missing:
        raise KeyError(f"{path} has no signature {', '.join(sorted(missing))}")
    staged = path.with_name(path.name + ".tmp")
    staged.write_bytes(proto.SerializeToString())
    staged.replace(path)
    # Its hashes describe the old saved_model.pb; TensorFlow treats the file as optional.
    (path.parent / FINGERPRINT_PB).unlink(missing_ok=True)
