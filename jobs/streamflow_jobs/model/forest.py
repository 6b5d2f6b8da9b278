"""IsolationForest as a checksummed data artifact, and a scorer that needs no scikit-learn.

The artifact is JSON: metadata plus each tree's node arrays (base64 of zlib-compressed
little-endian arrays). Thresholds are stored rounded down to float32, which keeps every comparison
exact (see below) and halves the size, and leaves store their training sample count, from which
the path-length correction c(n) is recomputed with scikit-learn's formula.
Loading it executes nothing (no pickle, no joblib): it is decoded, checked against its SHA-256
checksum and validated structurally (children point forward, features in range), so a tampered or
corrupt file is refused with a clear error.

Scoring reproduces ``IsolationForest.score_samples``: each tree contributes
``depth(leaf) + c(n_samples(leaf)) - 1`` for the leaf a row reaches, the sum over trees is divided
by ``n_trees * c(max_samples)`` and the anomaly score is ``2 ** -(that)``. Like scikit-learn, rows
are compared as float32 (see :func:`round_down_f32` for why float32 thresholds are exact).
For speed, trees are padded into complete binary trees so that a walk is index arithmetic
(``child = 2 * node + 1 + (x > threshold)``), compiled with numba; a vectorised numpy walk of the
same arrays is the reference it is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamflow_jobs.model.artifact import (
    ModelArtifactError,
    check_document,
    pack,
    parse_document,
    payload_checksum,
    read_bytes,
    seal,
    unpack,
    write_artifact,
)
from streamflow_jobs.model.explain import PathTrees, ranked
from streamflow_jobs.model.treewalk import compiled_walk

__all__ = [
    "DEFAULT_MODEL_PATH",
    "FORMAT",
    "SHIPPED_FOREST_PATH",
    "ForestArtifact",
    "ForestScorer",
    "ModelArtifactError",
    "payload_checksum",
    "verify_artifact",
    "write_artifact",
]

FORMAT = "streamflow.isolation-forest"
FORMAT_VERSION = 1
MAX_DEPTH = 16  # padded trees hold 2 ** (depth + 1) nodes; deeper models are refused
# The shipped model (whatever kind: model.loader.load_model reads it) and the shipped
# IsolationForest, the unsupervised alternative (`streamflow train --seed 7 --unsupervised`).
DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.json")
SHIPPED_FOREST_PATH = Path(__file__).with_name("iforest_model.json")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class Calibration(BaseModel):
    """Maps the raw anomaly score (0..1, ~0.5 = ordinary) onto [0, 1] linearly between two
    quantiles of the training scores, so the blend with the rules score is on a comparable scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0, le=1, description="raw score mapped to 0 (a training quantile)")
    high: float = Field(ge=0, le=1, description="raw score mapped to 1 (training top quantile)")


class TreeArrays(BaseModel):
    """Node arrays of all trees, concatenated; ``offsets[i]`` is tree i's first node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offsets: list[int]
    node_count: int = Field(ge=1)
    children_left: str = Field(description="zlib+base64 int16 LE, -1 at leaves")
    children_right: str = Field(description="zlib+base64 int16 LE, -1 at leaves")
    feature: str = Field(description="zlib+base64 uint8, index into features (0 at leaves)")
    threshold: str = Field(description="zlib+base64 float32 LE, split threshold rounded down")
    n_samples: str = Field(description="zlib+base64 uint16 LE, training samples at each node")


class ForestArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    format_version: int
    model_version: str = Field(min_length=1, max_length=64)
    features: list[str]
    n_trees: int = Field(ge=1, le=10_000)
    max_samples: int = Field(ge=1)
    denominator: float = Field(gt=0)
    calibration: Calibration
    training: dict[str, Any]
    trees: TreeArrays
    checksum: str


def average_path_length(n: F64) -> F64:
    """c(n), the mean path length of an unsuccessful BST search (Liu et al.), with scikit-learn's
    ``_average_path_length`` formula. The logarithm is Python's (the C library's), not numpy's
    vectorised one, whose last bit depends on the processor (AVX-512): leaf values, hence
    scores, must not."""
    distinct, where = np.unique(n, return_inverse=True)  # a few hundred sizes in a forest
    c = [
        0.0
        if v < 2
        else 1.0
        if v == 2
        else 2.0 * (math.log(v - 1.0) + np.euler_gamma) - 2.0 * (v - 1.0) / v
        for v in distinct.tolist()
    ]
    out: F64 = np.array(c, dtype=np.float64)[where.reshape(n.shape)]
    return out


@dataclass(frozen=True)
class RawTree:
    """One isolation tree in scikit-learn's node layout (feature indices already global)."""

    children_left: npt.NDArray[np.int64]
    children_right: npt.NDArray[np.int64]
    feature: npt.NDArray[np.int64]
    threshold: F32  # rounded down to float32 (exact for float32 inputs)
    n_samples: npt.NDArray[np.int64]

    def leaf_values(self) -> F64:
        """depth + c(n) - 1 at every node (scikit-learn's per-leaf path length; root depth 1)."""
        depth = np.zeros(len(self.feature), dtype=np.float64)
        depth[0] = 1.0
        for node in range(len(self.feature)):  # children always follow their parent
            left = self.children_left[node]
            if left != -1:
                depth[left] = depth[self.children_right[node]] = depth[node] + 1.0
        return depth + average_path_length(self.n_samples.astype(np.float64)) - 1.0


def build_artifact(
    trees: list[RawTree],
    *,
    features: list[str],
    max_samples: int,
    denominator: float,
    calibration: Calibration,
    training: dict[str, Any],
    name: str = "iforest",
) -> dict[str, Any]:
    """Assemble the JSON document (with its checksum and a content-derived version)."""
    offsets = np.cumsum([0] + [len(t.feature) for t in trees[:-1]]).tolist()

    def cat(attr: str, dtype: str) -> str:
        return pack(np.concatenate([getattr(t, attr) for t in trees]).astype(dtype))

    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": "",
        "features": list(features),
        "n_trees": len(trees),
        "max_samples": int(max_samples),
        "denominator": float(denominator),
        "calibration": calibration.model_dump(),
        "training": training,
        "trees": {
            "offsets": offsets,
            "node_count": int(sum(len(t.feature) for t in trees)),
            "children_left": cat("children_left", "<i2"),
            "children_right": cat("children_right", "<i2"),
            "feature": cat("feature", "u1"),
            "threshold": cat("threshold", "<f4"),
            "n_samples": cat("n_samples", "<u2"),
        },
    }
    return seal(doc, name)


class ForestScorer:
    """Scores feature rows with an exported IsolationForest. Immutable and thread-safe.

    Its score (:meth:`score_one`, :meth:`scores`) is the calibrated anomaly score in [0, 1]."""

    kind = "isolation_forest"

    def __init__(self, artifact: ForestArtifact, trees: list[RawTree]) -> None:
        self.artifact = artifact
        self.model_version = artifact.model_version
        self.features = tuple(artifact.features)
        self._denominator = artifact.denominator
        cal = artifact.calibration
        self._cal_low = cal.low
        self._cal_span = max(cal.high - cal.low, 1e-12)
        self._pad(trees)
        self._paths = _path_trees(trees, self._denominator)
        # Pay numba's one-time start-up (~1 s, even from its disk cache) at load, not mid-stream.
        self.raw_scores(np.zeros((1, len(self.features))))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The ordered input names of a row (model/features.FEATURE_NAMES)."""
        return self.features

    def input_row(
        self, features: tuple[float, ...], severities: tuple[float, ...]
    ) -> tuple[float, ...]:
        """The row this model scores for a rules outcome (``RuleOutcome.features`` and
        ``.severities``): the forest takes the features alone."""
        return features

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> ForestScorer:
        """Load and verify an artifact; the shipped IsolationForest when ``path`` is None."""
        path = Path(path) if path is not None else SHIPPED_FOREST_PATH
        return cls.from_bytes(read_bytes(path), source=str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "model") -> ForestScorer:
        artifact = verify_artifact(raw, source)
        return cls(artifact, _decode_trees(artifact))

    # ---- layout ---------------------------------------------------------------------------
    def _pad(self, trees: list[RawTree]) -> None:
        depth = max(_tree_depth(t) for t in trees)
        inner = 2**depth - 1  # internal slots per padded tree
        n = len(trees)
        feature = np.zeros((n, inner), dtype=np.intp)
        threshold = np.full((n, inner), np.inf, dtype=np.float32)
        leaves = np.zeros((n, 2**depth), dtype=np.float64)
        for t, tree in enumerate(trees):
            values = tree.leaf_values()
            # (node, slot, level): walk the sklearn tree, placing nodes at level-order slots.
            stack = [(0, 0, 0)]
            while stack:
                node, slot, level = stack.pop()
                left = int(tree.children_left[node])
                if left == -1:
                    # A leaf above the bottom: its padded subtree always goes left (x <= +inf),
                    # so its value sits at the leftmost bottom descendant.
                    bottom = slot
                    for _ in range(depth - level):
                        bottom = 2 * bottom + 1
                    leaves[t, bottom - inner] = values[node]
                    continue
                feature[t, slot] = tree.feature[node]
                threshold[t, slot] = tree.threshold[node]
                stack.append((left, 2 * slot + 1, level + 1))
                stack.append((int(tree.children_right[node]), 2 * slot + 2, level + 1))
        self.depth = depth
        self.n_trees = n
        self._inner = inner
        self._feature = feature.ravel().astype(np.uint8 if feature.max() < 256 else np.intp)
        self._threshold = threshold.ravel()
        self._leaves = leaves.ravel()
        self._tree_base = (np.arange(n, dtype=np.intp) * inner)[None, :]
        self._leaf_base = (np.arange(n, dtype=np.intp) * 2**depth - inner)[None, :]
        # What the compiled walk takes after the rows (treewalk.walk; a sum of depths starts at 0).
        self._walk_args = (self._feature, self._threshold, self._leaves, n, depth, 0.0)

    # ---- scoring --------------------------------------------------------------------------
    def raw_scores(self, x: npt.ArrayLike) -> F64:
        """The anomaly score in (0, 1]: exactly ``-IsolationForest.score_samples(x)``."""
        x32 = self._check(x)
        walk = compiled_walk()
        if walk is not None:
            return self._anomaly(walk(x32, *self._walk_args))
        return self.raw_scores_numpy(x32)

    def _anomaly(self, depths: F64) -> F64:
        """``2 ** -(depth / denominator)`` per row with Python's float power: the per-event path
        (:meth:`raw_score_one`) does exactly this, while numpy's vectorised power may differ in
        the last bit on some processors (AVX-512), so the batch and the stream would not agree."""
        den = self._denominator
        return np.array([2.0 ** (-d / den) for d in depths.tolist()], dtype=np.float64)

    def _check(self, x: npt.ArrayLike) -> F32:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.ndim != 2 or x32.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} features, got {x32.shape}")
        return x32

    def raw_scores_numpy(self, x: npt.ArrayLike) -> F64:
        """The same scores with numpy alone: the reference for the compiled walk (and the
        fallback where numba is unavailable). ~5x slower."""
        x32 = self._check(x)
        rows = x32.shape[0]
        flat_x = x32.ravel()
        row_base = (np.arange(rows, dtype=np.intp) * x32.shape[1])[:, None]
        node = np.zeros((rows, self.n_trees), dtype=np.intp)
        for _ in range(self.depth):
            slot = node + self._tree_base
            go_right = flat_x[row_base + self._feature[slot]] > self._threshold[slot]
            node *= 2
            node += 1
            node += go_right
        path = self._leaves[node + self._leaf_base]
        # Summed tree by tree, as the compiled walk sums (numpy's sum is pairwise: other bits).
        depths = np.zeros(rows, dtype=np.float64)
        for t in range(self.n_trees):
            depths += path[:, t]
        return self._anomaly(depths)

    def raw_score_one(self, row: Sequence[float]) -> float:
        """One row, for per-event callers (the Flink job): the same compiled walk, without the
        batch path's array checks and arithmetic (~8 us instead of ~14 us per call)."""
        walk = compiled_walk()
        if walk is None or len(row) != len(self.features):
            return float(self.raw_scores(np.array([row], dtype=np.float64))[0])
        x32 = np.array([row], dtype=np.float32)
        depth = walk(x32, *self._walk_args)
        return float(2.0 ** (-float(depth[0]) / self._denominator))

    def score_one(self, row: Sequence[float]) -> float:
        """The calibrated score of one row: ``scores([row])[0]``, bit for bit."""
        return self.calibrate_one(self.raw_score_one(row))

    def explain_one(self, row: Sequence[float]) -> list[tuple[str, float]]:
        """What made this row look anomalous: (feature, contribution) for every feature, largest
        ``|contribution|`` first (ties by name). Path attribution (see model/explain.py) on each
        tree's expected path length: a split that sends the row into a small part of the
        training sample shortens its expected path, and that shortening is credited to the
        split's feature. Contributions are in units of ``log2`` of the raw anomaly score
        (``2 ** -(path / denominator)``): they add up to ``log2(raw) - base_value``, so a
        feature with 0.5 alone multiplied the raw score by 2 ** 0.5.

        Why paths rather than each value's rank among the training data: the forest's score is
        the path length, so the splits it took are what made the score; a value can be rare
        and still not be what isolated the row."""
        x32 = np.array(row, dtype=np.float32).tolist()  # compared as the walk compares them
        return ranked(self.features, self._paths.contributions(x32, len(self.features)))

    @property
    def base_value(self) -> float:
        """``log2`` of the raw score at the roots, where :meth:`explain_one` starts."""
        return self._paths.base_value()

    def calibrate(self, raw: F64) -> F64:
        """:meth:`calibrate_one` of each score (the same scalar operations, not numpy's)."""
        one = self.calibrate_one
        return np.array([one(r) for r in raw.tolist()], dtype=np.float64)

    def calibrate_one(self, raw: float) -> float:
        v = (raw - self._cal_low) / self._cal_span
        return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v

    def scores(self, x: npt.ArrayLike) -> list[float]:
        """Calibrated ML scores in [0, 1] for a batch of feature rows: per row exactly
        ``calibrate_one(raw_score_one(row))``, in one pass over the walk's depths."""
        walk = compiled_walk()
        if walk is None:
            return self.calibrate(self.raw_scores(x)).tolist()  # type: ignore[no-any-return]
        den, low, span = self._denominator, self._cal_low, self._cal_span
        return [
            0.0 if v < 0.0 else 1.0 if v > 1.0 else v
            for v in [
                (2.0 ** (-d / den) - low) / span
                for d in walk(self._check(x), *self._walk_args).tolist()
            ]
        ]


def verify_artifact(raw: bytes, source: str = "model") -> ForestArtifact:
    """Decode and check a model artifact (format, checksum, node arrays) without building a
    scorer: what the operator needs to accept a model, without the scoring path or numba."""
    doc = parse_document(raw, source)
    check_document(doc, source, FORMAT, FORMAT_VERSION)
    try:
        artifact = ForestArtifact.model_validate(doc)
    except ValidationError as exc:
        raise ModelArtifactError(f"{source}: invalid artifact: {exc}") from exc
    _decode_trees(artifact)  # the structural checks
    return artifact


def _path_trees(trees: list[RawTree], denominator: float) -> PathTrees:
    """The trees for path attribution, with node values ``-(depth + c(n) - 1) / denominator``
    (shorter expected paths are more anomalous, so larger values are nearer to fraud)."""
    left: list[int] = []
    right: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    value: list[float] = []
    roots = []
    for tree in trees:
        base = len(left)
        roots.append(base)
        internal = tree.children_left != -1
        left += np.where(internal, tree.children_left + base, -1).tolist()
        right += np.where(internal, tree.children_right + base, -1).tolist()
        feature += tree.feature.tolist()
        threshold += tree.threshold.astype(np.float64).tolist()
        value += [-v / denominator for v in tree.leaf_values().tolist()]
    return PathTrees(roots, left, right, feature, threshold, value)


def round_down_f32(values: F64) -> F32:
    """The largest float32 <= each value. For any float32 x, ``x <= value`` and
    ``x <= round_down_f32(value)`` agree (no float32 lies between the two), so scikit-learn's
    float64 thresholds can be stored and compared as float32 without changing a single split."""
    f = values.astype(np.float32)
    up = f.astype(np.float64) > values
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


def _tree_depth(tree: RawTree) -> int:
    depth, stack = 0, [(0, 0)]
    while stack:
        node, level = stack.pop()
        left = int(tree.children_left[node])
        if left == -1:
            depth = max(depth, level)
        else:
            stack.append((left, level + 1))
            stack.append((int(tree.children_right[node]), level + 1))
    return depth


def _decode_trees(artifact: ForestArtifact) -> list[RawTree]:
    t = artifact.trees
    offsets = t.offsets
    if len(offsets) != artifact.n_trees or offsets[:1] != [0] or offsets != sorted(set(offsets)):
        raise ModelArtifactError("trees.offsets: must start at 0, increase and list every tree")
    total = t.node_count
    if offsets[-1] >= total:
        raise ModelArtifactError("trees.offsets: beyond node_count")
    left = unpack(t.children_left, "<i2", total, "children_left").astype(np.int64)
    right = unpack(t.children_right, "<i2", total, "children_right").astype(np.int64)
    feature = unpack(t.feature, "u1", total, "feature").astype(np.int64)
    threshold = unpack(t.threshold, "<f4", total, "threshold")
    n_samples = unpack(t.n_samples, "<u2", total, "n_samples").astype(np.int64)
    n_features = len(artifact.features)
    bounds = [*offsets[1:], total]
    trees = []
    for i, (start, end) in enumerate(zip(offsets, bounds, strict=True)):
        size = end - start
        tree = RawTree(
            left[start:end],
            right[start:end],
            feature[start:end],
            threshold[start:end],
            n_samples[start:end],
        )
        nodes = np.arange(size)
        internal = tree.children_left != -1
        # Children strictly after their parent and inside the tree: no cycles, walks terminate.
        ok = (
            np.all((tree.children_left == -1) == (tree.children_right == -1))
            and np.all(tree.children_left[internal] > nodes[internal])
            and np.all(tree.children_right[internal] > nodes[internal])
            and np.all(tree.children_left[internal] < size)
            and np.all(tree.children_right[internal] < size)
            and np.all(tree.feature[internal] < n_features)
            and not np.any(np.isnan(tree.threshold[internal]))
        )
        if not ok:
            raise ModelArtifactError(f"tree {i}: malformed node arrays")
        if _tree_depth(tree) > MAX_DEPTH:
            raise ModelArtifactError(f"tree {i}: deeper than {MAX_DEPTH}")
        trees.append(tree)
    return trees
