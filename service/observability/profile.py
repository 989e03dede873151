"""Reference profiles of a model version's numeric inputs, the baseline that drift monitoring compares with.

``rtserve push --profile DATA`` writes one into the version folder as ``assets.extra/rtserve_profile.json``
(so MANIFEST.json covers it and TF Serving ignores it)::

    {"format": 1, "signature": "serving_default", "samples": 150,
     "features": [{"name": "features[0]", "input": "features", "index": 0,
                   "edges": [4.8, 5.1, ...], "proportions": [0.09, 0.11, ...]}, ...]}

A feature is one element of a numeric input's row: ``features[2]`` for a ``[-1, 4]`` input, ``x[1,0]`` for a
``[-1, 2, 3]`` one, plain ``x`` for a ``[-1]`` one; ``index`` is its position in the flattened row. Its bins are
split at ``edges`` (quantiles of the training sample, repeated values merged): a value v falls in bin
``count(edges <= v)``, so the first and last bins are open-ended. ``proportions`` (len(edges) + 1 of them) are the
training sample's share per bin, binned by the same function the server uses on live inputs.

DATA is a ``.npy`` (one array, rows first, for the signature's only numeric input), a ``.npz`` (one array per
input name) or a ``.csv`` (one column per feature of the only numeric input; a first row that is not numeric is a
header).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, AllowInfNan, BaseModel, Field, Strict, TypeAdapter

from service.documents import RULE, Problem, broken_rule, validated
from service.errors import InvalidArgument
from service.tensors import SignatureSpec, TensorSpec

PROFILE_PATH = "assets.extra/rtserve_profile.json"
PROFILE_FORMAT = 1
DEFAULT_BINS = 10
MIN_SAMPLES = 20
# A wider input is not a table of features (an image, an embedding): binning every element would neither be cheap
# nor mean much, and each feature is a metric series.
MAX_PROFILE_FEATURES = 1024

FloatMatrix = np.ndarray[Any, np.dtype[np.float64]]
Number = Annotated[float, Strict(), AllowInfNan(False)]  # an int or a finite float; true is no number


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's bins. The annotations are the profile file's rules, applied when a profile is parsed."""

    name: Annotated[str, Strict()]
    input: Annotated[str, Strict()]
    index: Annotated[int, Strict(), Field(ge=0)]  # position in the input's flattened row
    edges: tuple[Number, ...]
    proportions: tuple[Number, ...]


@dataclass(frozen=True)
class Profile:
    signature: str
    samples: int
    features: tuple[FeatureProfile, ...]


# -- features and bins, shared by `rtserve push` and the server ----------------------------------------------


def is_profilable(spec: TensorSpec) -> bool:
    """Numeric, batched, and every other dimension known: rows flatten to a fixed number of features."""
    numeric = spec.dtype.is_integer or spec.dtype.is_floating
    return numeric and spec.is_batched and spec.shape is not None and all(dim >= 0 for dim in spec.shape[1:])


def feature_names(input_name: str, row_shape: tuple[int, ...]) -> list[str]:
    """One name per element of a row, in flattened (C) order."""
    if not row_shape:
        return [input_name]
    if len(row_shape) == 1:
        return [f"{input_name}[{i}]" for i in range(row_shape[0])]
    return [f"{input_name}[{','.join(map(str, index))}]" for index in np.ndindex(*row_shape)]


def bin_counts(values: np.ndarray, edges: FloatMatrix) -> np.ndarray:
    """Counts per (feature, bin) of ``values`` [rows, features] against per-feature ``edges`` [features, E].

    Edges are padded with +inf where a feature has fewer, so those bins stay empty. One comparison and one
    bincount for the whole batch: the cost does not grow with a Python loop over features. NaN lands in bin 0.
    """
    features, width = edges.shape
    bins = width + 1
    # Each feature's bins get their own range of bincount slots: feature f, bin b -> f * bins + b.
    index = (values[:, :, np.newaxis] >= edges).sum(axis=2, dtype=np.intp) + np.arange(0, features * bins, bins)
    return np.bincount(index.ravel(), minlength=features * bins).reshape(features, bins)


def padded_edges(features: Sequence[FeatureProfile]) -> FloatMatrix:
    width = max((len(f.edges) for f in features), default=0)
    matrix = np.full((len(features), width), np.inf)
    for row, feature in enumerate(features):
        matrix[row, : len(feature.edges)] = feature.edges
    return matrix


# -- building a profile --------------------------------------------------------------------------------------


def build_profile(signature: SignatureSpec, samples: Mapping[str, np.ndarray], bins: int = DEFAULT_BINS) -> Profile:
    """The profile of training ``samples`` (input name -> rows) for ``signature``'s numeric inputs."""
    if bins < 2:
        raise InvalidArgument(f"a profile needs at least 2 bins, got {bins}")
    features: list[FeatureProfile] = []
    rows = 0
    for name, array in samples.items():
        matrix = _feature_matrix(signature, name, array)
        rows = rows or matrix.shape[0]
        if matrix.shape[0] != rows:
            raise InvalidArgument(f"input {name!r} has {matrix.shape[0]} samples, the others {rows}")
        names = feature_names(name, tuple(signature.inputs[name].shape or ())[1:])
        features += [_feature(name, i, names[i], matrix[:, i], bins) for i in range(matrix.shape[1])]
    if not features:
        raise InvalidArgument("the profile data holds no numeric input of the signature")
    if len(features) > MAX_PROFILE_FEATURES:
        raise InvalidArgument(f"{len(features)} features is more than a profile takes ({MAX_PROFILE_FEATURES})")
    return Profile(signature.name, rows, tuple(features))


def _feature_matrix(signature: SignatureSpec, name: str, array: np.ndarray) -> FloatMatrix:
    spec = signature.inputs.get(name)
    if spec is None:
        known = ", ".join(sorted(signature.inputs))
        raise InvalidArgument(f"signature {signature.name!r} has no input {name!r} (has: {known})")
    if not is_profilable(spec):
        raise InvalidArgument(f"input {name!r} ({spec.dtype.tf_name} {spec.describe_shape()}) cannot be profiled")
    row_shape = tuple(spec.shape or ())[1:]
    if array.ndim == 0 or tuple(array.shape[1:]) != row_shape:
        expected = "[rows" + "".join(f", {d}" for d in row_shape) + "]"
        raise InvalidArgument(f"profile data for input {name!r} has shape {list(array.shape)}, expected {expected}")
    if array.shape[0] < MIN_SAMPLES:
        raise InvalidArgument(f"profile data has {array.shape[0]} samples; at least {MIN_SAMPLES} are needed")
    try:
        # Through the input's own dtype first: live float32 inputs must fall into the same bins as the training
        # values they came from (3.1 as float32 is below the float64 edge 3.1).
        matrix = np.asarray(array, dtype=spec.dtype.numpy).astype(np.float64).reshape(array.shape[0], -1)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"profile data for input {name!r} is not numeric: {error}") from None
    if not np.isfinite(matrix).all():
        raise InvalidArgument(f"profile data for input {name!r} holds NaN or infinite values")
    return matrix


def _feature(input_name: str, index: int, name: str, column: FloatMatrix, bins: int) -> FeatureProfile:
    # Inner quantiles only: the outer bins are open. Repeated values (integer features, ties) merge edges.
    edges = np.unique(np.quantile(column, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = bin_counts(column[:, np.newaxis], edges[np.newaxis, :])[0]
    proportions = counts / column.shape[0]
    return FeatureProfile(name, input_name, index, tuple(map(float, edges)), tuple(map(float, proportions)))


# -- reading training samples --------------------------------------------------------------------------------


def load_samples(path: Path, signature: SignatureSpec) -> dict[str, np.ndarray]:
    """Training samples from a .npy, .npz or .csv file, keyed by input name."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        if suffix == ".npy":
            return {_only_numeric_input(signature, path): np.load(path, allow_pickle=False)}
        if suffix == ".csv":
            return {_only_numeric_input(signature, path): _read_csv(path)}
    except (OSError, ValueError) as error:
        raise InvalidArgument(f"cannot read profile data {path}: {error}") from None
    raise InvalidArgument(f"profile data {path} must be a .npy, .npz or .csv file")


def _only_numeric_input(signature: SignatureSpec, path: Path) -> str:
    names = [name for name, spec in signature.inputs.items() if is_profilable(spec)]
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise InvalidArgument(
            f"{path.name} holds one array, but signature {signature.name!r} has {len(names)} numeric inputs with "
            f"known row shapes ({found}); use a .npz file with one array per input name"
        )
    return names[0]


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _is_numeric_row(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError("no data rows")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"rows have different numbers of columns: {sorted(widths)}")
    array = np.array(rows, dtype=np.float64)
    return array[:, 0] if array.shape[1] == 1 else array


def _is_numeric_row(row: Sequence[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


# -- the JSON file -------------------------------------------------------------------------------------------


def dump_profile(profile: Profile) -> bytes:
    document = {
        "format": PROFILE_FORMAT,
        "signature": profile.signature,
        "samples": profile.samples,
        "features": [
            {
                "name": f.name,
                "input": f.input,
                "index": f.index,
                "edges": list(f.edges),
                "proportions": list(f.proportions),
            }
            for f in profile.features
        ],
    }
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def _bins_fit(feature: FeatureProfile) -> FeatureProfile:
    if len(feature.proportions) != len(feature.edges) + 1:
        raise broken_rule("needs numeric 'edges' and one more 'proportions'")
    if any(later <= earlier for earlier, later in itertools.pairwise(feature.edges)):
        raise broken_rule("has edges that are not increasing")
    return feature


class _ProfileDocument(BaseModel):
    # Fields it does not know are ignored, as they always were.
    format: Literal[1]  # PROFILE_FORMAT; like before, 1.0 and true are equal to it
    signature: Annotated[str, Strict()]
    samples: Annotated[int, Strict()]  # strict: "samples": true is refused (it used to pass for 1)
    features: list[Annotated[FeatureProfile, AfterValidator(_bins_fit)]]


_PROFILE_DOCUMENT = TypeAdapter(_ProfileDocument)


def parse_profile(data: bytes) -> Profile:
    """Parse a profile; anything malformed is InvalidArgument naming the problem."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"{PROFILE_PATH} is not valid JSON: {error}") from None
    parsed = validated(_PROFILE_DOCUMENT, document, _explain, InvalidArgument)
    return Profile(parsed.signature, parsed.samples, tuple(parsed.features))


def _explain(problem: Problem) -> str:
    """The one-line message for the first problem pydantic found, worded as before pydantic (tests pin it)."""
    match problem.loc:
        case ("signature" | "samples" | "features",):
            return f"{PROFILE_PATH} needs 'signature' (string), 'samples' (int) and 'features' (list)"
        case ("features", int(position), *inner):
            where = f"{PROFILE_PATH} features[{position}]"
            name = problem.find(("features", position, "name"))
            if problem.kind == RULE:
                return f"{where} ({name}) {problem.reason}"
            match inner:
                case []:
                    return f"{where} must be an object"
                case ["name" | "input", *_]:
                    return f"{where} needs string 'name' and 'input'"
                case ["index", *_]:
                    return f"{where} ({name}) has an invalid index {problem.value!r}"
            return f"{where} ({name}) needs numeric 'edges' and one more 'proportions'"
    return f"{PROFILE_PATH} is not a format {PROFILE_FORMAT} profile"


def read_profile(folder: Path) -> Profile | None:
    """The profile of a version folder; None when it has none."""
    path = folder / PROFILE_PATH
    if not path.is_file():
        return None
    return parse_profile(path.read_bytes())
