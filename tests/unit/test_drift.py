"""Drift monitoring: the sliding window of counts, the population stability index, and the monitor."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from service.observability.drift import CountWindow, DriftMonitor, open_drift_monitor, population_stability_index
from service.observability.profile import PROFILE_PATH, build_profile, dump_profile
from service.settings import DriftSettings
from service.tensors import DTYPES, SignatureSpec, TensorSpec

FLOAT = next(d for d in DTYPES if d.tf_name == "DT_FLOAT")
IRIS = SignatureSpec("serving_default", "p", {"features": TensorSpec("features", FLOAT, (-1, 4))}, {})


def training(rows: int = 2000, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def monitor(**settings: int) -> DriftMonitor:
    profile = build_profile(IRIS, {"features": training()})
    return DriftMonitor(profile, DriftSettings(**{"min_samples": 100, "window_size": 1000, **settings}))


def test_window_drops_whole_blocks_once_full() -> None:
    window = CountWindow((1, 2), size=100, blocks=10)
    for _ in range(10):
        window.add(np.array([[10, 0]]), 10)
    assert window.rows == 100 and window.totals.tolist() == [[100, 0]]
    window.add(np.array([[0, 10]]), 10)  # the eleventh block: the first one drops out
    assert window.rows == 100 and window.totals.tolist() == [[90, 10]]
    window.add(np.array([[0, 5]]), 5)  # a partial block is counted, nothing drops
    assert window.rows == 105 and window.totals.tolist() == [[90, 15]]


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    expected = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert population_stability_index(expected, expected)[0] == pytest.approx(0.0)
    small = population_stability_index(expected, np.array([[0.2, 0.3, 0.25, 0.25]]))[0]
    large = population_stability_index(expected, np.array([[0.0, 0.0, 0.0, 1.0]]))[0]
    assert 0 < small < 0.1 < 0.25 < large


def test_monitor_scores_undrifted_rows_low_and_shifted_features_high() -> None:
    drift = monitor()
    assert drift.reading() == (0, None)
    fresh = training(640, seed=2)
    for start in range(0, 640, 32):  # batches of two 16-row requests
        batch = fresh[start : start + 32]
        drift.observe([{"features": batch[:16]}, {"features": batch[16:]}])
    rows, psi = drift.reading()
    assert rows == 640 and psi is not None and max(psi.values()) < 0.1
    shifted = training(seed=3)
    shifted[:, 2] += 3.0
    drift.observe([{"features": shifted[:1200]}])
    rows, psi = drift.reading()
    assert psi is not None and psi["features[2]"] > 1.0
    assert max(psi["features[0]"], psi["features[1]"], psi["features[3]"]) < 0.1


def test_no_score_below_min_samples_and_at_most_max_features() -> None:
    drift = monitor(min_samples=50, max_features=2)
    drift.observe([{"features": training(40)}])
    assert drift.reading() == (40, None)
    drift.observe([{"features": training(40)}])
    rows, psi = drift.reading()
    assert rows == 80 and psi is not None and list(psi) == ["features[0]", "features[1]"]


def write_profile(folder: Path, document: bytes) -> None:
    (folder / PROFILE_PATH).parent.mkdir(parents=True)
    (folder / PROFILE_PATH).write_bytes(document)


def test_open_monitor_for_a_version_with_a_fitting_profile(tmp_path: Path) -> None:
    write_profile(tmp_path, dump_profile(build_profile(IRIS, {"features": training()})))
    opened = open_drift_monitor(tmp_path, {"serving_default": IRIS}, DriftSettings(), "iris 1")
    assert opened is not None and opened.feature_names == tuple(f"features[{i}]" for i in range(4))
    assert open_drift_monitor(tmp_path, {"serving_default": IRIS}, DriftSettings(enabled=False), "iris 1") is None
    assert open_drift_monitor(tmp_path / "none", {"serving_default": IRIS}, DriftSettings(), "iris 1") is None


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.update(signature="other"), "signature 'other'"),
        (lambda d: d["features"][0].update(input="missing"), "missing or not numeric"),
        (lambda d: d["features"][3].update(index=4), "outside input rows of 4"),
    ],
)
def test_a_profile_that_does_not_fit_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: object, complaint: str
) -> None:
    document = json.loads(dump_profile(build_profile(IRIS, {"features": training()})))
    change(document)  # type: ignore[operator]
    write_profile(tmp_path, json.dumps(document).encode())
    with caplog.at_level(logging.ERROR, logger="service.observability.drift"):
        assert open_drift_monitor(tmp_path, {"serving_default": IRIS}, DriftSettings(), "iris 1") is None
    assert "drift monitoring is off" in caplog.text and complaint in caplog.text
