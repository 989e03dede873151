"""The compute-bound bench case: its lanes, its request bodies and the settings its peers run with.

The model is bench/cnnmodel.py's CNN (``images`` [-1, 64, 64, 3] -> ``probabilities`` [-1, 10]), served alone (its
own repository, its own server start) so the Iris lanes' servers and numbers stay as they were. One image per
request, over

* ``cnn-v2-binary``: V2 REST with the binary tensor extension (JSON header + 49,152 bytes of little-endian float32,
  the output asked for as binary): rtserve and KServe. MLServer has no binary extension on REST, so its REST lane
  is ``cnn-v2-json`` (the same image as JSON numbers), the only REST body it reads;
* ``cnn-v2-grpc``: V2 gRPC ``ModelInfer`` with ``raw_input_contents`` (raw outputs back): every server.

Answers are checked against the in-process reference of the same images (bench.inprocess ``--case cnn``).
"""

from __future__ import annotations

from bench import cnnmodel, grpc_payloads, payloads, servers
from bench.payloads import Payload

MODEL = cnnmodel.NAME
IMAGES = (1,)  # images per request
CONCURRENCIES = (1, 32)  # of the bench's list, the ones this case runs (its cost in a full run stays small)
INPROCESS_BATCHES = "1,8,32,64,128"
# Float32 convolutions batched differ from one image alone in the last bits; softmax outputs are in [0, 1].
TOLERANCE = 1e-4
V2_PATH = f"/v2/models/{MODEL}/infer"
BINARY = servers.Lane("cnn-v2-binary", "v2-binary", V2_PATH)
JSON = servers.Lane("cnn-v2-json", "v2-json", V2_PATH)
GRPC = servers.Lane("cnn-v2-grpc", "v2-grpc", grpc_payloads.MODEL_INFER_METHOD, kind="grpc", counter="grpc-v2")
LANES: dict[str, tuple[servers.Lane, ...]] = {
    "rtserve": (BINARY, GRPC),
    "kserve": (BINARY, GRPC),
    "mlserver": (JSON, GRPC),
    "mlserver-batching": (JSON, GRPC),
}
# MLServer's adaptive batching for this model: up to 64 images a call (twice the bench's c=32, so a full queue
# always fits one call; batch 64 is where the in-process rate levels off) and at most 1 ms of waiting, as
# rtserve's default batch_timeout_us. Its Iris settings (servers.MLSERVER_BATCHING) stay as they are.
MLSERVER_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.001}


def selected(names: str | None, wanted: set[str] | None) -> list[tuple[servers.ServerSpec, tuple[servers.Lane, ...]]]:
    """The servers (``--servers``, all by default) and their CNN lanes that ``--lanes`` asks for: every CNN lane
    when no lanes are named, the lane by name, or all of them for ``cnn``."""
    chosen = []
    for spec in servers.SERVERS:
        if spec.name not in LANES or (names and spec.name not in names.split(",")):
            continue
        lanes = tuple(lane for lane in LANES[spec.name] if wanted is None or {lane.name, "cnn"} & wanted)
        if lanes:
            chosen.append((spec, lanes))
    return chosen


def build(protocol: str, count: int) -> Payload:
    """The request for ``count`` of the case's images in one of its protocols."""
    images = cnnmodel.images(count)
    if protocol == "v2-binary":
        return Payload(protocol, count, *payloads.v2_binary(cnnmodel.INPUT_NAME, cnnmodel.OUTPUT_NAME, images))
    if protocol == "v2-json":
        flat = [float(value) for value in images.ravel()]
        return Payload(protocol, count, *payloads.v2_json(cnnmodel.INPUT_NAME, list(images.shape), flat))
    if protocol == "v2-grpc":
        message = grpc_payloads.v2_infer(MODEL, cnnmodel.INPUT_NAME, cnnmodel.OUTPUT_NAME, images)
        return Payload(protocol, count, grpc_payloads.frame(message), dict(grpc_payloads.HEADERS))
    raise ValueError(f"no {protocol!r} body for the CNN case")


def bodies() -> dict[tuple[str, int], Payload]:
    """Every body the case's lanes send, keyed as bench.run keys them: (protocol, images)."""
    protocols = sorted({lane.protocol for lanes in LANES.values() for lane in lanes})
    return {(protocol, count): build(protocol, count) for protocol in protocols for count in IMAGES}
