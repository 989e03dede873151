"""Every checked-in descriptor set is what `make protos` generates from the .proto beside it (same bytes), so
that a .proto edit without regenerating fails here instead of serving stale messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.codecs import proto_pool

REPO = Path(__file__).resolve().parents[2]

# (Python package, .proto, descriptor set): the V2 gRPC messages and TF Serving's config messages.
SETS = [
    ("service.codecs", "open_inference.proto", "open_inference.binpb"),
    ("service.compat", "tfserving_config.proto", "tfserving_config.binpb"),
]


@pytest.mark.parametrize(("package", "proto", "descriptor_set"), SETS)
def test_descriptor_set_is_what_the_proto_generates(
    package: str, proto: str, descriptor_set: str, tmp_path: Path
) -> None:
    protos = REPO.joinpath(*package.split(".")) / "protos"
    out = tmp_path / "regenerated.binpb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--include_imports", f"--descriptor_set_out={out}", proto],
        check=True,
        cwd=protos,
    )
    assert out.read_bytes() == proto_pool.descriptor_set_bytes(package, descriptor_set)
