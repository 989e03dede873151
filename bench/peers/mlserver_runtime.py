"""MLServer with a custom runtime that calls the SavedModel's serving signature.

Runs in ``bench/.venvs/mlserver`` as ``mlserver start FOLDER``; the bench writes FOLDER's ``settings.json``
(``parallel_workers: 0``: inference runs in the server process, because MLServer's default worker pool crashes
with current uvloop releases; ``debug: false``, so no access log) and ``model-settings.json`` (this class, the
SavedModel folder as ``parameters.uri``). Everything else is MLServer's default (no adaptive batching).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

SIGNATURE = "serving_default"


class SavedModelSignature(MLModel):  # type: ignore[misc]  # mlserver is untyped
    """Serves the signature's own inputs and outputs (names and dtypes from the SavedModel), so the same runtime
    serves the Iris model and the CNN."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri
        self._signature: Any = tf.saved_model.load(uri).signatures[SIGNATURE]
        specs = self._signature.structured_input_signature[1]
        self._inputs: dict[str, Any] = {name: spec.dtype for name, spec in specs.items()}
        self._outputs = sorted(self._signature.structured_outputs)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arrays = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        tensors = {name: tf.constant(arrays[name], dtype=dtype) for name, dtype in self._inputs.items()}
        results = self._signature(**tensors)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, np.asarray(results[name].numpy())) for name in self._outputs],
        )
