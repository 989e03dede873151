"""Reference profiles: building one from training samples, the files it reads, and the JSON it writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidArgument
from service.observability.drift import open_drift_monitor
from service.observability.profile import (
    PROFILE_PATH,
    bin_counts,
    build_profile,
    dump_profile,
    feature_names,
    load_samples,
    padded_edges,
    parse_profile,
)
from service.settings import DriftSettings
from service.tensors import DTYPES, SignatureSpec, TensorSpec

FLOAT = next(d for d in DTYPES if d.tf_name == "DT_FLOAT")
INT64 = next(d for d in DTYPES if d.tf_name == "DT_INT64")
STRING = next(d for d in DTYPES if d.tf_name == "DT_STRING")


def signature(**inputs: TensorSpec) -> SignatureSpec:
    return SignatureSpec("serving_default", "tensorflow/serving/predict", inputs, {})


IRIS = signature(features=TensorSpec("features", FLOAT, (-1, 4)))


def samples(rows: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def test_feature_names_follow_the_row_shape() -> None:
    assert feature_names("x", ()) == ["x"]
    assert feature_names("features", (3,)) == ["features[0]", "features[1]", "features[2]"]
    assert feature_names("x", (2, 2)) == ["x[0,0]", "x[0,1]", "x[1,0]", "x[1,1]"]


def test_profile_of_a_sample_has_decile_bins_holding_a_tenth_each() -> None:
    profile = build_profile(IRIS, {"features": samples(1000)})
    assert profile.samples == 1000 and profile.signature == "serving_default"
    assert [f.name for f in profile.features] == [f"features[{i}]" for i in range(4)]
    for feature in profile.features:
        assert len(feature.edges) == 9 and list(feature.edges) == sorted(feature.edges)
        assert feature.proportions == pytest.approx([0.1] * 10, abs=0.002)


def test_repeated_values_merge_edges() -> None:
    integers = signature(ids=TensorSpec("ids", INT64, (-1,)))
    profile = build_profile(integers, {"ids": np.array([1] * 46 + [2] * 4, dtype=np.int64)})
    (feature,) = profile.features
    assert feature.name == "ids" and feature.edges == (1.0,)  # nine deciles, all 1
    assert feature.proportions == pytest.approx((0.0, 1.0))


def test_float32_inputs_fall_into_the_bins_of_the_training_values_they_equal() -> None:
    """Live FP32 values equal to an edge's training value land in the same bin as in training (3.1f < 3.1)."""
    column = np.array([3.1, 3.1, 3.3, 2.9, 3.0] * 10)
    profile = build_profile(signature(x=TensorSpec("x", FLOAT, (-1,))), {"x": column})
    live = column.astype(np.float32)[:, np.newaxis]
    counts = bin_counts(live, padded_edges(profile.features))[0]
    assert (counts / len(column)).tolist() == pytest.approx(profile.features[0].proportions)


def test_bin_counts_pads_features_with_fewer_edges() -> None:
    edges = np.array([[0.0, 1.0], [5.0, np.inf]])
    values = np.array([[-1.0, 4.0], [0.5, 6.0], [2.0, 7.0]])
    assert bin_counts(values, edges).tolist() == [[1, 1, 1], [1, 2, 0]]


def test_json_round_trip() -> None:
    profile = build_profile(IRIS, {"features": samples()})
    assert parse_profile(dump_profile(profile)) == profile


def _feature_document(edges: str = "1", **feature: object) -> bytes:
    """A profile of one feature; ``edges`` is JSON text, so that it can hold NaN or integers past any float."""
    base: dict[str, object] = {"name": "a", "input": "a", "index": 0, "proportions": [0.5, 0.5], "unit": "cm"}
    base.update(feature)
    text = json.dumps({"format": 1, "signature": "s", "samples": 30, "features": [base], "by": "push"})
    return text.replace('"unit"', f'"edges": [{edges}], "unit"').encode()


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        (b"{", "not valid JSON"),
        (b'{"format": 2}', "format 1"),
        (
            b'{"format": 1, "signature": "s", "samples": 1, "features": [{"name": "a", "input": "a", "index": 0, '
            b'"edges": [2, 1], "proportions": [0.3, 0.3, 0.4]}]}',
            "not increasing",
        ),
        (
            b'{"format": 1, "signature": "s", "samples": 1, "features": [{"name": "a", "input": "a", "index": 0, '
            b'"edges": [1], "proportions": [1]}]}',
            "one more",
        ),
        (b"[]", "not a format 1 profile"),
        (b'{"format": 1, "signature": "s", "samples": 1}', r"needs 'signature' \(string\), 'samples' \(int\)"),
        # stricter than before: true was taken for a sample count
        (b'{"format": 1, "signature": "s", "samples": true, "features": []}', "needs 'signature'"),
        (b'{"format": 1, "signature": "s", "samples": 1, "features": ["x"]}', r"features\[0\] must be an object"),
        (_feature_document(name=None), r"features\[0\] needs string 'name' and 'input'"),
        (_feature_document(input=3), "needs string 'name' and 'input'"),
        (_feature_document(index=True), r"features\[0\] \(a\) has an invalid index True"),
        (_feature_document(index=-1), "invalid index -1"),
        (_feature_document(edges='"1"'), r"\(a\) needs numeric 'edges' and one more 'proportions'"),
        (_feature_document(proportions=[0.5, True]), "needs numeric 'edges'"),
        (_feature_document(edges="NaN"), "needs numeric 'edges'"),
        # an integer past any float: it used to escape as OverflowError, which the drift loader does not catch
        (_feature_document(edges="1" + "0" * 400), "needs numeric 'edges'"),
        (_feature_document(edges="1, 1", proportions=[0.3, 0.3, 0.4]), r"\(a\) has edges that are not increasing"),
    ],
)
def test_malformed_profiles_are_refused(document: bytes, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        parse_profile(document)


def test_a_profile_too_large_for_floats_leaves_the_version_serving_unmonitored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / PROFILE_PATH
    path.parent.mkdir(parents=True)
    path.write_bytes(_feature_document(edges="1" + "0" * 400))
    with caplog.at_level(logging.ERROR, logger="service.observability.drift"):
        assert open_drift_monitor(tmp_path, {"serving_default": IRIS}, DriftSettings(), "iris 1") is None
    assert "drift monitoring is off" in caplog.text and "needs numeric 'edges'" in caplog.text


def test_integral_numbers_and_unknown_fields_are_taken() -> None:
    profile = parse_profile(_feature_document(edges="1, 2", proportions=[0, 1, 0]))
    assert profile.features[0].edges == (1.0, 2.0) and profile.features[0].proportions == (0.0, 1.0, 0.0)
    assert all(isinstance(value, float) for value in profile.features[0].edges)


def test_samples_from_csv_with_a_header_npy_and_npz(tmp_path: Path) -> None:
    data = samples(30)
    csv = tmp_path / "train.csv"
    csv.write_text("a,b,c,d\n" + "\n".join(",".join(map(str, row)) for row in data.tolist()) + "\n")
    np.save(tmp_path / "train.npy", data)
    np.savez(tmp_path / "train.npz", features=data)
    for name in ("train.csv", "train.npy", "train.npz"):
        loaded = load_samples(tmp_path / name, IRIS)
        assert list(loaded) == ["features"]
        assert np.allclose(loaded["features"], data)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (np.zeros((30, 3)), r"shape \[30, 3\], expected \[rows, 4\]"),
        (np.zeros((5, 4)), "at least 20"),
        (np.full((30, 4), np.nan), "NaN"),
    ],
)
def test_unusable_samples_are_refused(data: np.ndarray, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        build_profile(IRIS, {"features": data})


def test_one_array_needs_one_numeric_input(tmp_path: Path) -> None:
    two = signature(a=TensorSpec("a", FLOAT, (-1, 2)), b=TensorSpec("b", FLOAT, (-1,)))
    np.save(tmp_path / "train.npy", np.zeros((30, 2)))
    with pytest.raises(InvalidArgument, match=r"use a \.npz file"):
        load_samples(tmp_path / "train.npy", two)


def test_strings_and_unknown_inputs_cannot_be_profiled() -> None:
    text = signature(words=TensorSpec("words", STRING, (-1,)))
    with pytest.raises(InvalidArgument, match="cannot be profiled"):
        build_profile(text, {"words": np.array([b"a"] * 30, dtype=object)})
    with pytest.raises(InvalidArgument, match="has no input 'other'"):
        build_profile(IRIS, {"other": samples()})


def test_csv_with_text_cells_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("1,2,3,setosa\n" * 30)
    with pytest.raises(InvalidArgument, match="cannot read profile data"):
        load_samples(path, IRIS)
