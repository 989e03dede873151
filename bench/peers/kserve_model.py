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
from kserve.utils.utils import generate_uuid

SIGNATURE = "serving_default"


class SavedModelSignature(kserve.Model):  # type: ignore[misc]  # kserve is untyped
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature: Any = None
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.model_dir).signatures[SIGNATURE]
        self.ready = True
        return True

    def _run(self, features: np.ndarray) -> np.ndarray:
        outputs = self.signature(features=tf.constant(features, dtype=tf.float32))
        return np.asarray(outputs["probabilities"].numpy())

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            probabilities = self._run(payload.inputs[0].as_numpy())
            shape = list(probabilities.shape)
            if payload.from_grpc:
                # KServe's gRPC answer wants the numpy data set this way (raw_output_contents): given as ``data``,
                # its to_grpc tests the array's truth value and fails.
                output = InferOutput(name="probabilities", shape=shape, datatype="FP32")
                output.set_data_from_numpy(probabilities, binary_data=True)
            else:
                output = InferOutput(name="probabilities", shape=shape, datatype="FP32", data=probabilities)
            return InferResponse(
                response_id=payload.id or generate_uuid(),
                model_name=self.name,
                infer_outputs=[output],
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )
        probabilities = self._run(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": probabilities.tolist()}


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
