"""The load-time check that decides which signatures may merge requests (service/batch_safety.py).

First on numpy servables that stand for the kinds of model (row-wise, softmax/centering/ranking over the batch,
float noise, refusals), then on real TensorFlow SavedModels, and the operator's choices that override the check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fakes import FakeLoader, write_fake_version
from service.batch_safety import (
    CHECK_FAILED,
    DISABLED,
    FORCED_OFF,
    FORCED_ON,
    NO_BATCH_DIMENSION,
    SAFE,
    UNSAFE,
    Verdict,
    batching_parameters,
    decide,
)
from service.errors import InvalidArgument
from service.runtime.runner import RunnerChoice
from service.settings import BatchingSettings, Settings
from service.tensors import PREDICT_METHOD, SignatureSpec, TensorSpec, dtype_from_tf_name

FLOAT = dtype_from_tf_name("DT_FLOAT")

Body = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def spec(name: str, inputs: Mapping[str, tuple[str, tuple[int, ...]]], outputs: Mapping[str, Any]) -> SignatureSpec:
    def specs(shapes: Mapping[str, tuple[str, tuple[int, ...] | None]]) -> dict[str, TensorSpec]:
        return {key: TensorSpec(key, dtype_from_tf_name(dtype), shape) for key, (dtype, shape) in shapes.items()}

    return SignatureSpec(name, PREDICT_METHOD, specs(inputs), specs(outputs))


def float_spec(name: str) -> SignatureSpec:
    return spec(name, {"x": ("DT_FLOAT", (-1, 3))}, {"y": ("DT_FLOAT", (-1, 3))})


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0))
    return np.asarray(e / e.sum(axis=0), np.float32)


BODIES: dict[str, Body] = {
    "rowwise": lambda i: {"y": i["x"] * 3 + 1},
    "softmax": lambda i: {"y": softmax_rows(i["x"])},
    "center": lambda i: {"y": i["x"] - i["x"].mean(axis=0)},
    "rank": lambda i: {"y": np.argsort(np.argsort(i["x"][:, 0]))[:, None].repeat(3, 1).astype(np.float32)},
    # Another summation order per batch size, as batched kernels have: equal within float tolerance.
    "noisy": lambda i: {"y": (i["x"] * (1 + 1e-7 * len(i["x"]))).astype(np.float32)},
    "refuses": lambda i: (_ for _ in ()).throw(InvalidArgument("no such feature")),
    "total": lambda i: {"y": i["x"].sum(axis=0, keepdims=True)},
}


class NumpyServable:
    """Each signature computes one body of BODIES on float32 [-1, 3]; calls are counted."""

    def __init__(self, *names: str) -> None:
        self._signatures = {name: float_spec(name) for name in names}
        self.calls = 0

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return BODIES[name](inputs)


def verdicts(servable: Any, **settings: Any) -> dict[str, Verdict]:
    return decide(servable.run, servable.signatures, BatchingSettings(**settings))


def test_rowwise_signatures_are_safe_and_mixing_ones_are_not() -> None:
    servable = NumpyServable(*BODIES)
    found = verdicts(servable)
    assert {name: verdict.basis for name, verdict in found.items()} == {
        "rowwise": SAFE,
        "softmax": UNSAFE,
        "center": UNSAFE,
        "rank": UNSAFE,
        "noisy": SAFE,
        "refuses": CHECK_FAILED,
        "total": UNSAFE,
    }
    assert {name for name, verdict in found.items() if verdict.merge} == {"rowwise", "noisy"}
    assert "output 'y' of row 0 differs in a call of 2 rows" in found["softmax"].detail
    assert "no such feature" in found["refuses"].detail
    assert "one row per input row" in found["total"].detail
    assert "2, 5, 8 rows" in found["rowwise"].detail


def test_the_check_is_bounded_and_capped_by_max_batch_size() -> None:
    servable = NumpyServable("rowwise")
    assert verdicts(servable)["rowwise"].merge
    assert servable.calls == 8 + 3  # eight rows alone, then calls of 2, 5 and 8 rows
    servable.calls = 0
    assert "2, 3 rows" in verdicts(servable, max_batch_size=3)["rowwise"].detail
    assert servable.calls == 3 + 2


def test_string_int_and_bool_inputs_are_checked_too() -> None:
    signature = spec(
        "mixed",
        {"ids": ("DT_INT64", (-1, -1)), "tokens": ("DT_STRING", (-1,)), "flag": ("DT_BOOL", (-1,))},
        {"out": ("DT_STRING", (-1,)), "n": ("DT_INT64", (-1,))},
    )
    seen: list[Mapping[str, np.ndarray]] = []

    def run(name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs)
        upper = np.array([t.upper() if f else t for t, f in zip(inputs["tokens"], inputs["flag"], strict=True)])
        return {"out": upper.astype(object), "n": inputs["ids"].sum(axis=1)}

    def mixing(name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = run(name, inputs)
        result["n"] = result["n"] + inputs["ids"].sum()  # leaks every row's ids into each answer
        return result

    assert decide(run, {"mixed": signature}, BatchingSettings())["mixed"].basis == SAFE
    batch = seen[-1]
    assert batch["ids"].dtype == np.int64 and batch["flag"].dtype == np.bool_
    assert all(isinstance(token, bytes) and token for token in batch["tokens"])
    assert len(set(batch["tokens"].tolist())) > 1 and batch["flag"].any() and not batch["flag"].all()
    assert decide(mixing, {"mixed": signature}, BatchingSettings())["mixed"].basis == UNSAFE


def test_a_model_that_refuses_random_strings_is_checked_with_neutral_ones() -> None:
    """Serialized tf.Examples: random bytes do not parse, empty ones do (an empty Example)."""
    signature = spec("examples", {"inputs": ("DT_STRING", (-1,))}, {"scores": ("DT_FLOAT", (-1,))})

    def run(name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if any(inputs["inputs"]):
            raise InvalidArgument("Could not parse example input")
        return {"scores": np.zeros(len(inputs["inputs"]), np.float32)}

    assert decide(run, {"examples": signature}, BatchingSettings())["examples"].basis == SAFE


def test_outputs_whose_shape_depends_on_the_other_rows_are_unsafe() -> None:
    """Padding to the longest row of the call: a row's answer would change with its company."""
    signature = spec("pad", {"x": ("DT_FLOAT", (-1, 3))}, {"y": ("DT_FLOAT", (-1, -1))})

    def run(name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        width = int(np.abs(inputs["x"]).sum(axis=1).max() * 3) + 1
        return {"y": np.zeros((len(inputs["x"]), width), np.float32)}

    assert "has shape" in decide(run, {"pad": signature}, BatchingSettings())["pad"].detail


def test_the_operator_forces_either_way_per_model_and_per_signature() -> None:
    servable = NumpyServable("rowwise", "softmax")
    assert {n: v.basis for n, v in verdicts(servable, merge="off").items()} == {
        "rowwise": FORCED_OFF,
        "softmax": FORCED_OFF,
    }
    servable.calls = 0
    forced = verdicts(servable, merge="on")
    assert {n: (v.merge, v.basis) for n, v in forced.items()} == {
        "rowwise": (True, FORCED_ON),
        "softmax": (True, FORCED_ON),
    }
    assert servable.calls == 0  # forced: nothing is run
    mixed = verdicts(servable, signatures={"softmax": "off", "rowwise": "on"})
    assert (mixed["rowwise"].basis, mixed["softmax"].basis) == (FORCED_ON, FORCED_OFF)
    assert verdicts(servable, enabled=False)["rowwise"].basis == DISABLED
    assert verdicts(servable, max_batch_size=1, merge="on")["rowwise"].basis == DISABLED


def test_signatures_without_a_batch_dimension_are_never_merged_even_when_forced() -> None:
    signature = spec("fixed", {"x": ("DT_FLOAT", (2, 3))}, {"y": ("DT_FLOAT", (2, 3))})
    found = decide(lambda name, inputs: {"y": inputs["x"]}, {"fixed": signature}, BatchingSettings(merge="on"))
    assert (found["fixed"].merge, found["fixed"].basis) == (False, NO_BATCH_DIMENSION)


def test_merge_choices_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_BATCHING__MERGE", "off")
    monkeypatch.setenv("RTSERVE_BATCHING__SIGNATURES", '{"score": "auto"}')
    monkeypatch.setenv(
        "RTSERVE_BATCHING__OVERRIDES", '{"iris": {"merge": "on", "signatures": {"rank": "off"}}, "m": {}}'
    )
    batching = Settings().batching
    assert (batching.merge_choice("score"), batching.merge_choice("other")) == ("auto", "off")
    iris = batching.for_model("iris")
    assert [iris.merge_choice(name) for name in ("rank", "score", "other")] == ["off", "auto", "on"]
    assert batching.for_model("m").merge_choice("rank") == "off"


def test_a_misspelt_merge_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSERVE_BATCHING__OVERRIDES", '{"iris": {"merge": "yes"}}')
    with pytest.raises(ValidationError, match="merge"):
        Settings()


def test_verdicts_as_v2_metadata_parameters() -> None:
    found = verdicts(NumpyServable("rowwise", "softmax"))
    parameters = batching_parameters(found)
    assert list(parameters) == ["rtserve.batching.rowwise", "rtserve.batching.softmax"]
    assert parameters["rtserve.batching.rowwise"].startswith("batched (safe): ")
    assert parameters["rtserve.batching.softmax"].startswith("alone (unsafe): output 'y'")
    assert all(isinstance(value, str) for value in parameters.values())


def test_the_fake_runtime_is_row_safe(tmp_path: Path) -> None:
    servable = FakeLoader()(write_fake_version(tmp_path / "1", 1))
    assert verdicts(servable)["serving_default"].basis == SAFE


# -- real TensorFlow models ----------------------------------------------------------------------------------


def tf_verdicts(folder: Path, runner: RunnerChoice) -> dict[str, Verdict]:
    from service.runtime.tensorflow import TensorFlowLoader

    servable = TensorFlowLoader(runner=runner)(folder)
    try:
        return verdicts(servable)
    finally:
        servable.close()


def test_real_models_that_mix_rows_are_unsafe_and_a_rowwise_signature_is_safe(
    batch_mixing_model_dir: Path, runner: RunnerChoice
) -> None:
    found = tf_verdicts(batch_mixing_model_dir, runner)
    assert {name: verdict.basis for name, verdict in found.items()} == {
        "serving_default": UNSAFE,  # softmax over axis 0
        "center": UNSAFE,
        "rank": UNSAFE,
        "rowwise": SAFE,
    }


def test_the_demo_model_and_a_keras_dense_model_are_safe(
    demo_model_dir: Path, keras_model_dir: Path, runner: RunnerChoice
) -> None:
    demo = tf_verdicts(demo_model_dir, runner)
    assert demo["serving_default"].basis == SAFE
    assert demo["classify"].basis == CHECK_FAILED  # tf.Examples missing its features: runs alone unless forced
    keras = tf_verdicts(keras_model_dir, runner)
    assert {name: verdict.basis for name, verdict in keras.items()} == {"serving_default": SAFE, "serve": SAFE}


def test_real_models_with_int_string_bool_and_example_inputs(
    multi_signature_model_dir: Path, classify_regress_model_dir: Path, runner: RunnerChoice
) -> None:
    assert {name: v.basis for name, v in tf_verdicts(multi_signature_model_dir, runner).items()} == {
        "serving_default": SAFE,
        "scale": SAFE,
    }
    examples = tf_verdicts(classify_regress_model_dir, runner)
    assert {name: v.basis for name, v in examples.items()} == {"classify": CHECK_FAILED, "regress": CHECK_FAILED}
