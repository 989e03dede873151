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
    async def load(self) -> bool:
        uri = self.settings.parameters.uri
        self._signature: Any = tf.saved_model.load(uri).signatures[SIGNATURE]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        probabilities = self._signature(features=tf.constant(features))["probabilities"].numpy()
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("probabilities", np.asarray(probabilities))],
        )
