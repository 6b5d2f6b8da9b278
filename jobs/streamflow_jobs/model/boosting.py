"""Gradient-boosted trees learnt from labels, as a checksummed data artifact scored without
scikit-learn.

The model is scikit-learn's ``GradientBoostingClassifier`` (model/train.py) exported as data: the
log-odds before the first tree (``init``), the learning rate, and per tree its node arrays in
scikit-learn's layout (children, split input, float64 threshold, node value). A leaf's value is
what the tree adds to the log-odds before the learning rate; an internal node's is the
training-weighted mean of its children's, what the tree would add had it stopped there, which
is what :meth:`BoostingScorer.explain_one` needs. Loading executes nothing: the document is
decoded, checked against its SHA-256 checksum and validated structurally (children point
forward, inputs known and in range, finite numbers), so a tampered or corrupt file is refused
with a one-line error.

Scoring reproduces ``predict_proba(x)[:, 1]``: rows are compared as float32, as scikit-learn's
trees compare them (``x <= threshold`` goes left), and the margin is ``init`` plus
``learning_rate * leaf`` of each tree added in training order, as scikit-learn's
``predict_stages`` adds them (the products are taken once at load, so the compiled walk only
adds). The probability is ``1 / (1 + exp(-margin))`` with Python's ``math.exp`` (the C library's)
in the batch and the per-event paths alike: numpy's vectorised ``exp`` may differ in the last
bit on some processors (docs/detector-guarantees.md).

Like the forest, trees are padded into complete binary trees of the deepest tree's depth, so a
walk is index arithmetic (``child = 2 * node + 1 + (x > threshold)``) compiled with numba.
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
    read_bytes,
    seal,
    unpack,
)
from streamflow_jobs.model.explain import PathTrees, ranked
from streamflow_jobs.model.features import MODEL_INPUTS
from streamflow_jobs.model.treewalk import compiled_walk

FORMAT = "streamflow.gradient-boosting"
FORMAT_VERSION = 1
KIND = "gradient_boosting"
# Padded trees hold 2 ** (depth + 1) nodes each: deeper models are refused (training uses 3).
MAX_DEPTH = 10
MAX_TREES = 5_000
MAX_NODES = 2_000_000

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class BoostedTreeArrays(BaseModel):
    """Node arrays of all trees, concatenated; ``offsets[i]`` is tree i's first node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offsets: list[int]
    node_count: int = Field(ge=1, le=MAX_NODES)
    children_left: str = Field(description="zlib+base64 int16 LE, -1 at leaves")
    children_right: str = Field(description="zlib+base64 int16 LE, -1 at leaves")
    feature: str = Field(description="zlib+base64 uint8, index into inputs (0 at leaves)")
    threshold: str = Field(description="zlib+base64 float64 LE, x <= threshold goes left")
    value: str = Field(description="zlib+base64 float64 LE, node value before the learning rate")


class BoostedArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    format_version: int
    kind: str
    model_version: str = Field(min_length=1, max_length=64)
    inputs: list[str] = Field(min_length=1, max_length=len(MODEL_INPUTS))
    n_trees: int = Field(ge=1, le=MAX_TREES)
    learning_rate: float = Field(gt=0.0, le=1.0)
    init: float = Field(description="log-odds before the first tree")
    training: dict[str, Any]
    trees: BoostedTreeArrays
    checksum: str


@dataclass(frozen=True)
class BoostedTree:
    """One tree in scikit-learn's node layout (``children_left == -1`` at leaves)."""

    children_left: npt.NDArray[np.int64]
    children_right: npt.NDArray[np.int64]
    feature: npt.NDArray[np.int64]
    threshold: F64
    value: F64


def node_values(
    left: npt.NDArray[np.int64], right: npt.NDArray[np.int64], leaf: F64, weight: F64
) -> F64:
    """Every node's value from the leaves' (values at internal nodes are ignored): an internal
    node's is the ``weight``-weighted mean of its children's, bottom up."""
    value = leaf.astype(np.float64).tolist()
    w = weight.astype(np.float64).tolist()
    lo_, hi_ = left.tolist(), right.tolist()
    for node in range(len(value) - 1, -1, -1):  # children always follow their parent
        lo, hi = lo_[node], hi_[node]
        if lo == -1:
            continue
        n = w[lo] + w[hi]
        value[node] = (w[lo] * value[lo] + w[hi] * value[hi]) / n if n > 0 else value[lo]
    return np.array(value, dtype=np.float64)


def build_artifact(
    trees: list[BoostedTree],
    *,
    inputs: Sequence[str],
    init: float,
    learning_rate: float,
    training: dict[str, Any],
    name: str = "gbt",
) -> dict[str, Any]:
    """Assemble the JSON document (with its checksum and a content-derived version)."""
    offsets = np.cumsum([0] + [len(t.feature) for t in trees[:-1]]).tolist()

    def cat(attr: str, dtype: str) -> str:
        return pack(np.concatenate([getattr(t, attr) for t in trees]).astype(dtype))

    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "model_version": "",
        "inputs": list(inputs),
        "n_trees": len(trees),
        "learning_rate": float(learning_rate),
        "init": float(init),
        "training": training,
        "trees": {
            "offsets": offsets,
            "node_count": int(sum(len(t.feature) for t in trees)),
            "children_left": cat("children_left", "<i2"),
            "children_right": cat("children_right", "<i2"),
            "feature": cat("feature", "u1"),
            "threshold": cat("threshold", "<f8"),
            "value": cat("value", "<f8"),
        },
    }
    return seal(doc, name)


def verify_artifact(raw: bytes, source: str = "model") -> BoostedArtifact:
    """Decode and check a gradient-boosting artifact without building a scorer (no numba)."""
    artifact = _validate(parse_document(raw, source), source)
    _decode_trees(artifact, source)  # the structural checks
    return artifact


def _validate(doc: dict[str, Any], source: str) -> BoostedArtifact:
    check_document(doc, source, FORMAT, FORMAT_VERSION)
    try:
        artifact = BoostedArtifact.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelArtifactError(f"{source}: invalid artifact: {where}: {first['msg']}") from exc
    unknown = [n for n in artifact.inputs if n not in MODEL_INPUTS]
    if unknown or len(set(artifact.inputs)) != len(artifact.inputs):
        raise ModelArtifactError(
            f"{source}: inputs must be distinct names among {list(MODEL_INPUTS)}, "
            f"got {artifact.inputs}"
        )
    if artifact.kind != KIND:
        raise ModelArtifactError(f"{source}: kind {artifact.kind!r} in a {FORMAT} artifact")
    if not (math.isfinite(artifact.init) and math.isfinite(artifact.learning_rate)):
        raise ModelArtifactError(f"{source}: init and learning_rate must be finite numbers")
    return artifact


def sigmoid(margin: float) -> float:
    """The probability of a margin (log-odds), as scipy's ``expit`` computes it, with the C
    library's ``exp``: the one scalar operation both scoring paths use."""
    return 1.0 / (1.0 + math.exp(-margin))


class BoostingScorer:
    """Scores input rows with exported gradient-boosted trees. Immutable and thread-safe.

    The same interface as :class:`~streamflow_jobs.model.forest.ForestScorer`: the raw score
    (:meth:`raw_score_one`) is the log-odds of fraud, the calibrated score
    (:meth:`calibrate_one`, :meth:`scores`) the model's fraud probability."""

    kind = KIND

    def __init__(self, artifact: BoostedArtifact, trees: list[BoostedTree]) -> None:
        self.artifact = artifact
        self.model_version = artifact.model_version
        self.features = tuple(artifact.inputs)
        self.init = artifact.init
        self.learning_rate = artifact.learning_rate
        self._input_index = [MODEL_INPUTS.index(name) for name in self.features]
        self._all_inputs = self.features == MODEL_INPUTS
        self._pad(trees)
        self._paths = _path_trees(trees, self.learning_rate)
        self._base_value = self.init + self._paths.base_value()
        # Pay numba's one-time start-up at load, not mid-stream.
        self.raw_scores(np.zeros((1, len(self.features))))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The ordered input names of a row (a subset of model/features.MODEL_INPUTS)."""
        return self.features

    @property
    def base_value(self) -> float:
        """The log-odds at the trees' roots, where :meth:`explain_one` starts."""
        return self._base_value

    def input_row(
        self, features: tuple[float, ...], severities: tuple[float, ...]
    ) -> tuple[float, ...]:
        """The row this model scores for a rules outcome (``RuleOutcome.features`` and
        ``.severities``): its declared inputs, picked from ``MODEL_INPUTS``."""
        if self._all_inputs:
            return features + severities
        both = features + severities
        return tuple([both[i] for i in self._input_index])

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> BoostingScorer:
        path = Path(path)
        return cls.from_bytes(read_bytes(path), source=str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "model") -> BoostingScorer:
        return cls.from_document(parse_document(raw, source), source)

    @classmethod
    def from_document(cls, doc: dict[str, Any], source: str = "model") -> BoostingScorer:
        artifact = _validate(doc, source)
        return cls(artifact, _decode_trees(artifact, source))

    # ---- layout ---------------------------------------------------------------------------
    def _pad(self, trees: list[BoostedTree]) -> None:
        depth = max(_tree_depth(t.children_left, t.children_right) for t in trees)
        depth = max(depth, 1)
        inner = 2**depth - 1
        n = len(trees)
        feature = np.zeros((n, inner), dtype=np.uint8)
        threshold = np.full((n, inner), np.inf, dtype=np.float64)
        leaves = np.zeros((n, 2**depth), dtype=np.float64)
        lr = self.learning_rate
        for t, tree in enumerate(trees):
            stack = [(0, 0, 0)]
            while stack:
                node, slot, level = stack.pop()
                left = int(tree.children_left[node])
                if left == -1:
                    # A leaf above the bottom: its padded subtree always goes left (a finite
                    # x <= +inf), so its value sits at the leftmost bottom descendant. The
                    # product is scikit-learn's ``scale * value``, taken once here.
                    bottom = slot
                    for _ in range(depth - level):
                        bottom = 2 * bottom + 1
                    leaves[t, bottom - inner] = lr * float(tree.value[node])
                    continue
                feature[t, slot] = tree.feature[node]
                threshold[t, slot] = tree.threshold[node]
                stack.append((left, 2 * slot + 1, level + 1))
                stack.append((int(tree.children_right[node]), 2 * slot + 2, level + 1))
        self.depth = depth
        self.n_trees = n
        # What the compiled walk takes after the rows (treewalk.walk, from the initial log-odds).
        self._walk_args = (feature.ravel(), threshold.ravel(), leaves.ravel(), n, depth, self.init)

    # ---- scoring --------------------------------------------------------------------------
    def _check(self, x: npt.ArrayLike) -> F32:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.ndim != 2 or x32.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} inputs, got {x32.shape}")
        return x32

    def raw_scores(self, x: npt.ArrayLike) -> F64:
        """The log-odds of each row: scikit-learn's ``decision_function``."""
        x32 = self._check(x)
        walk = compiled_walk()
        if walk is None:  # pragma: no cover - numba is a dependency
            return np.array([self.raw_score_python(r) for r in x32.tolist()], dtype=np.float64)
        return walk(x32, *self._walk_args)  # type: ignore[no-any-return]

    def raw_score_one(self, row: Sequence[float]) -> float:
        """One row's log-odds, for per-event callers (the Flink job): the same compiled walk
        as the batch, without its checks."""
        walk = compiled_walk()
        if walk is None or len(row) != len(self.features):
            return float(self.raw_scores(np.array([row], dtype=np.float64))[0])
        return float(walk(np.array([row], dtype=np.float32), *self._walk_args)[0])

    def raw_score_python(self, row: Sequence[float]) -> float:
        """One row's log-odds in pure Python over scikit-learn's layout: the reference the
        compiled walk is tested against (and the fallback without numba)."""
        x = np.array(row, dtype=np.float32).tolist()
        p = self._paths  # its values are the learning-rate-scaled ones the walk adds
        margin = self.init
        for root in p.roots:
            margin += p.value[p.leaf(root, x)]
        return margin

    def calibrate_one(self, raw: float) -> float:
        """The fraud probability of a log-odds."""
        return sigmoid(raw)

    def calibrate(self, raw: F64) -> F64:
        """:meth:`calibrate_one` of each log-odds (the same scalar operations, not numpy's)."""
        return np.array([sigmoid(m) for m in raw.tolist()], dtype=np.float64)

    def scores(self, x: npt.ArrayLike) -> list[float]:
        """Fraud probabilities of a batch of rows: per row exactly
        ``calibrate_one(raw_score_one(row))``."""
        return [sigmoid(m) for m in self.raw_scores(x).tolist()]

    def score_one(self, row: Sequence[float]) -> float:
        return sigmoid(self.raw_score_one(row))

    def explain_one(self, row: Sequence[float]) -> list[tuple[str, float]]:
        """(input, contribution to the log-odds) for every input, largest ``|contribution|``
        first, ties by name. Path attribution (model/explain.py): the contributions add up to
        ``raw_score_one(row) - base_value`` (to rounding)."""
        x = np.array(row, dtype=np.float32).tolist()  # compared as the walk compares them
        return ranked(self.features, self._paths.contributions(x, len(self.features)))


def _tree_depth(left: npt.NDArray[np.int64], right: npt.NDArray[np.int64]) -> int:
    depth, stack = 0, [(0, 0)]
    while stack:
        node, level = stack.pop()
        lo = int(left[node])
        if lo == -1:
            depth = max(depth, level)
        else:
            stack.append((lo, level + 1))
            stack.append((int(right[node]), level + 1))
    return depth


def _path_trees(trees: list[BoostedTree], learning_rate: float) -> PathTrees:
    """The trees for path attribution, node values in log-odds (learning rate applied)."""
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
        threshold += tree.threshold.tolist()
        value += [learning_rate * v for v in tree.value.tolist()]
    return PathTrees(roots, left, right, feature, threshold, value)


def _decode_trees(artifact: BoostedArtifact, source: str = "model") -> list[BoostedTree]:
    t = artifact.trees
    offsets = t.offsets
    if len(offsets) != artifact.n_trees or offsets[:1] != [0] or offsets != sorted(set(offsets)):
        raise ModelArtifactError(
            f"{source}: trees.offsets must start at 0, increase and list every tree"
        )
    total = t.node_count
    if offsets[-1] >= total:
        raise ModelArtifactError(f"{source}: trees.offsets beyond node_count")
    try:
        left = unpack(t.children_left, "<i2", total, "children_left").astype(np.int64)
        right = unpack(t.children_right, "<i2", total, "children_right").astype(np.int64)
        feature = unpack(t.feature, "u1", total, "feature").astype(np.int64)
        threshold = unpack(t.threshold, "<f8", total, "threshold").astype(np.float64)
        value = unpack(t.value, "<f8", total, "value").astype(np.float64)
    except ModelArtifactError as exc:
        raise ModelArtifactError(f"{source}: {exc}") from exc
    n_inputs = len(artifact.inputs)
    bounds = [*offsets[1:], total]
    trees = []
    for i, (start, end) in enumerate(zip(offsets, bounds, strict=True)):
        size = end - start
        tree = BoostedTree(
            left[start:end], right[start:end], feature[start:end], threshold[start:end],
            value[start:end],
        )  # fmt: skip
        nodes = np.arange(size)
        internal = tree.children_left != -1
        # Children strictly after their parent and inside the tree: no cycles, walks terminate.
        ok = (
            np.all((tree.children_left == -1) == (tree.children_right == -1))
            and np.all(tree.children_left[internal] > nodes[internal])
            and np.all(tree.children_right[internal] > nodes[internal])
            and np.all(tree.children_left[internal] < size)
            and np.all(tree.children_right[internal] < size)
            and np.all(tree.feature[internal] < n_inputs)
            and not np.any(np.isnan(tree.threshold[internal]))
            and np.all(np.isfinite(tree.value))
        )
        if not ok:
            raise ModelArtifactError(f"{source}: tree {i}: malformed node arrays")
        if _tree_depth(tree.children_left, tree.children_right) > MAX_DEPTH:
            raise ModelArtifactError(f"{source}: tree {i}: deeper than {MAX_DEPTH}")
        trees.append(tree)
    return trees
