"""Drift monitoring: live inputs of a model version, binned like its reference profile, over a sliding window.

The inference thread calls ``DriftMonitor.observe`` after it has answered a batch, so the request never waits
for it. Binning is one vectorized comparison per batch (observability/profile.py ``bin_counts``); the window keeps
counts, never inputs, in ``BLOCKS`` blocks of ``window_size / BLOCKS`` rows: memory is features x bins x BLOCKS
integers whatever the traffic, and the oldest block drops out as a new one fills. The score per feature is the
population stability index of the window against the profile, computed only when Prometheus scrapes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ServingError
from service.observability.profile import FeatureProfile, Profile, bin_counts, is_profilable, padded_edges, read_profile
from service.settings import DriftSettings
from service.tensors import SignatureSpec

log = logging.getLogger(__name__)

BLOCKS = 10
# Proportions are floored here before the logarithm: an empty bin on either side would make the index infinite.
PSI_FLOOR = 1e-4


def population_stability_index(expected: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """PSI per row of two [features, bins] proportion matrices: sum((o - e) * ln(o / e)) over bins."""
    expected = np.maximum(expected, PSI_FLOOR)
    observed = np.maximum(observed, PSI_FLOOR)
    result: np.ndarray = ((observed - expected) * np.log(observed / expected)).sum(axis=1)
    return result


class CountWindow:
    """Bin counts of the last ``size`` rows, more or less one block: whole blocks drop out, never single rows."""

    def __init__(self, shape: tuple[int, int], size: int, blocks: int = BLOCKS) -> None:
        self._block_rows = max(1, -(-size // blocks))
        self._blocks: deque[tuple[np.ndarray, int]] = deque()
        self._max_blocks = blocks
        self._current = np.zeros(shape, dtype=np.int64)
        self._current_rows = 0
        self.totals = np.zeros(shape, dtype=np.int64)
        self.rows = 0

    def add(self, counts: np.ndarray, rows: int) -> None:
        self._current += counts
        self._current_rows += rows
        self.totals += counts
        self.rows += rows
        if self._current_rows >= self._block_rows:
            self._blocks.append((self._current, self._current_rows))
            self._current = np.zeros_like(self._current)
            self._current_rows = 0
            if len(self._blocks) > self._max_blocks:
                oldest, oldest_rows = self._blocks.popleft()
                self.totals -= oldest
                self.rows -= oldest_rows


@dataclass(frozen=True)
class _InputColumns:
    name: str
    columns: np.ndarray | slice  # positions in the flattened row, in feature order


class DriftMonitor:
    """The sliding window of one version's live inputs against its reference profile. Thread-safe."""

    def __init__(self, profile: Profile, settings: DriftSettings) -> None:
        features = profile.features[: settings.max_features]
        self.signature = profile.signature
        self.feature_names = tuple(f.name for f in features)
        self._inputs = _columns_by_input(features)
        self._edges = padded_edges(features)
        bins = self._edges.shape[1] + 1
        self._expected = np.zeros((len(features), bins))
        for row, feature in enumerate(features):
            self._expected[row, : len(feature.proportions)] = feature.proportions
        self._min_samples = settings.min_samples
        self._window = CountWindow((len(features), bins), settings.window_size)
        self._lock = threading.Lock()

    def observe(self, requests: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Add the rows of requests that ran the profiled signature (already validated against it)."""
        if not requests:
            return
        matrix = self._feature_matrix(requests)
        counts = bin_counts(matrix, self._edges)
        with self._lock:
            self._window.add(counts, matrix.shape[0])

    def _feature_matrix(self, requests: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        parts = []
        for spec in self._inputs:
            arrays = [request[spec.name] for request in requests]
            stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            rows = stacked.reshape(stacked.shape[0], -1)
            parts.append(rows[:, spec.columns])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def reading(self) -> tuple[int, dict[str, float] | None]:
        """Rows in the window, and the PSI per feature once the window holds min_samples rows."""
        with self._lock:
            rows = self._window.rows
            totals = self._window.totals.copy()
        if rows < self._min_samples:
            return rows, None
        scores = population_stability_index(self._expected, totals / rows)
        return rows, dict(zip(self.feature_names, map(float, scores), strict=True))


def _columns_by_input(features: Sequence[FeatureProfile]) -> tuple[_InputColumns, ...]:
    """Features grouped by input in profile order; build_profile writes each input's features together."""
    names = list(dict.fromkeys(f.input for f in features))
    ordered = [f for name in names for f in features if f.input == name]
    if ordered != list(features):
        raise ValueError("the profile's features of one input are not contiguous")
    return tuple(_InputColumns(name, _columns([f.index for f in features if f.input == name])) for name in names)


def _columns(indices: list[int]) -> np.ndarray | slice:
    # The leading elements of a row in order (the usual case) are a slice: a view, not a copy of the rows.
    return slice(0, len(indices)) if indices == list(range(len(indices))) else np.array(indices, dtype=np.intp)


def check_profile(profile: Profile, signatures: Mapping[str, SignatureSpec]) -> None:
    """ValueError naming the first way ``profile`` does not fit the version's signatures."""
    signature = signatures.get(profile.signature)
    if signature is None:
        raise ValueError(f"the profile is for signature {profile.signature!r}, which the model does not have")
    for feature in profile.features:
        spec = signature.inputs.get(feature.input)
        if spec is None or not is_profilable(spec):
            raise ValueError(f"feature {feature.name}: input {feature.input!r} is missing or not numeric")
        width = int(np.prod(spec.shape[1:])) if spec.shape is not None else 0
        if feature.index >= width:
            raise ValueError(f"feature {feature.name}: index {feature.index} is outside input rows of {width}")


def open_drift_monitor(
    folder: Path, signatures: Mapping[str, SignatureSpec], settings: DriftSettings, where: str
) -> DriftMonitor | None:
    """The monitor for a version folder that carries a usable profile; None otherwise.

    A bad profile is logged and ignored: monitoring must never keep a model version from serving.
    """
    if not settings.enabled:
        return None
    try:
        profile = read_profile(folder)
        if profile is None:
            return None
        check_profile(profile, signatures)
        monitor = DriftMonitor(profile, settings)
    except (ServingError, ValueError, OSError) as error:
        log.error("%s: drift monitoring is off, its profile is unusable: %s", where, error)
        return None
    if len(profile.features) > settings.max_features:
        log.warning(
            "%s: monitoring the first %d of %d profiled features (RTSERVE_DRIFT__MAX_FEATURES)",
            where,
            settings.max_features,
            len(profile.features),
        )
    log.info("%s: drift monitoring of %d features", where, len(monitor.feature_names))
    return monitor
