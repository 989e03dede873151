"""KServe's Python model server with a custom ``kserve.Model`` that calls the SavedModel's serving signature.

Runs in ``bench/.venvs/kserve``. Both of KServe's REST protocols are on: V1 (``{"instances": ...}``) and V2
(JSON, and the binary tensor extension, which KServe implements), and its gRPC server on ``--grpc_port`` (V2
``GRPCInferenceService``, on by default in KServe). The per-request latency log line and uvicorn's access log are
off, as they are in rtserve; everything else is KServe's default (one worker process, ``predict`` called on the
event loop as KServe does for a plain ``def predict``).

usage: python kserve_model.py --http_port P --grpc_port G --model_dir DIR/iris/1 [--model_name iris]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kserve
import numpy as np
import tensorflow as tf
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import generate_uuid

SIGNATURE = "serving_default"
# The signature's inputs and outputs are read from the SavedModel, so the same code serves the Iris model and the CNN.


class SavedModelSignature(kserve.Model):  # type: ignore[misc]  # kserve is untyped
    """Serves the signature's own inputs and outputs, by the names and dtypes the SavedModel declares."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature: Any = None
        self.inputs: dict[str, tf.dtypes.DType] = {}
        self.outputs: list[str] = []
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.model_dir).signatures[SIGNATURE]
        self.inputs = {name: spec.dtype for name, spec in self.signature.structured_input_signature[1].items()}
        self.outputs = sorted(self.signature.structured_outputs)
        self.ready = True
        return True

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {name: tf.constant(arrays[name], dtype=dtype) for name, dtype in self.inputs.items()}
        outputs = self.signature(**tensors)
        return {name: np.asarray(outputs[name].numpy()) for name in self.outputs}

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            results = self._run({tensor.name: tensor.as_numpy() for tensor in payload.inputs})
            infer_outputs = []
            for name, values in results.items():
                shape, datatype = list(values.shape), from_np_dtype(values.dtype)
                if payload.from_grpc:
                    # KServe's gRPC answer wants the numpy data set this way (raw_output_contents): given as
                    # ``data``, its to_grpc tests the array's truth value and fails.
                    output = InferOutput(name=name, shape=shape, datatype=datatype)
                    output.set_data_from_numpy(values, binary_data=True)
                else:
                    output = InferOutput(name=name, shape=shape, datatype=datatype, data=values)
                infer_outputs.append(output)
            return InferResponse(
                response_id=payload.id or generate_uuid(),
                model_name=self.name,
                infer_outputs=infer_outputs,
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )
        # V1 ({"instances": [...]}) carries one unnamed input: the signature's only one.
        (only,) = self.inputs
        results = self._run({only: np.asarray(payload["instances"])})
        return {"predictions": next(iter(results.values())).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SavedModelSignature(args.model_name, args.model_dir)
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=True,
        enable_latency_logging=False,
        workers=1,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
