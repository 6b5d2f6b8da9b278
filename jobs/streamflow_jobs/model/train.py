"""Train FR-006's model on detector features and export it as a data artifact: an
IsolationForest without labels, gradient-boosted trees with them.

Only this module imports scikit-learn; scoring never does. Training is deterministic for a given
seed and input, so ``streamflow train --seed 7`` reproduces the shipped default model byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamflow_jobs.model.boosting import BoostedTree, node_values
from streamflow_jobs.model.boosting import build_artifact as build_boosted_artifact
from streamflow_jobs.model.features import FEATURE_NAMES, MODEL_INPUTS
from streamflow_jobs.model.forest import (
    Calibration,
    RawTree,
    average_path_length,
    build_artifact,
    round_down_f32,
)

if TYPE_CHECKING:
    from streamflow_jobs.labels import Labels

N_TREES = 100
# 1024 rather than scikit-learn's 256: on the generator's data the forest's average precision
# rose from 0.78 to 0.90 (trees of depth 10 see rare combinations such as tiny amounts in a burst).
MAX_SAMPLES = 1024
# Raw scores between these training quantiles map onto the calibrated [0, 1]: the ordinary 90 %
# score 0, so the model adds no noise to ordinary traffic, and the top 0.1 % score 1.
CALIBRATION_LOW_QUANTILE = 0.9
CALIBRATION_HIGH_QUANTILE = 0.999
# Fewer rows than this cannot place the calibration's top quantile (0.1 %) on a single row.
MIN_TRAINING_ROWS = 1000


def train_forest(
    features: npt.NDArray[np.float64], *, seed: int, training: dict[str, Any]
) -> dict[str, Any]:
    """Fit an IsolationForest on feature rows and return the artifact document."""
    from sklearn.ensemble import IsolationForest  # noqa: PLC0415  (training-only dependency)

    if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected rows of {len(FEATURE_NAMES)} features, got {features.shape}")
    if features.shape[0] < MIN_TRAINING_ROWS:
        raise ValueError(
            f"{features.shape[0]} transactions; a model needs at least {MIN_TRAINING_ROWS}"
        )
    forest = IsolationForest(
        n_estimators=N_TREES, max_samples=min(MAX_SAMPLES, len(features)), random_state=seed
    )
    forest.fit(features)
    max_samples = int(forest.max_samples_)

    trees = []
    for estimator, subset in zip(forest.estimators_, forest.estimators_features_, strict=True):
        t = estimator.tree_
        leaf = t.children_left == -1
        trees.append(
            RawTree(
                children_left=t.children_left.astype(np.int64),
                children_right=t.children_right.astype(np.int64),
                # The tree indexes its own feature subset; store indices into the full vector.
                feature=np.where(leaf, 0, np.asarray(subset)[np.maximum(t.feature, 0)]).astype(
                    np.int64
                ),
                threshold=round_down_f32(np.where(leaf, 0.0, t.threshold)),
                n_samples=t.n_node_samples.astype(np.int64),
            )
        )
    denominator = float(N_TREES * average_path_length(np.array([float(max_samples)]))[0])
    # The calibration quantiles come from the exported trees scored as the detector scores them
    # (scikit-learn's score_samples raises 2 to a power with numpy's vectorised kernel, whose
    # last bit depends on the processor: the artifact would differ from machine to machine).
    raw = _exported_raw_scores(trees, features, max_samples, denominator)
    calibration = Calibration(
        low=float(np.quantile(raw, CALIBRATION_LOW_QUANTILE)),
        high=float(np.quantile(raw, CALIBRATION_HIGH_QUANTILE)),
    )
    import sklearn  # noqa: PLC0415

    training = {
        **training,
        "seed": seed,
        "rows": int(features.shape[0]),
        "n_trees": N_TREES,
        "sklearn": sklearn.__version__,
    }
    return build_artifact(
        trees,
        features=list(FEATURE_NAMES),
        max_samples=max_samples,
        denominator=denominator,
        calibration=calibration,
        training=training,
    )


def _exported_raw_scores(
    trees: list[RawTree], features: npt.NDArray[np.float64], max_samples: int, denominator: float
) -> npt.NDArray[np.float64]:
    from streamflow_jobs.model.forest import ForestArtifact, ForestScorer  # noqa: PLC0415

    provisional = build_artifact(
        trees,
        features=list(FEATURE_NAMES),
        max_samples=max_samples,
        denominator=denominator,
        calibration=Calibration(low=0.0, high=1.0),
        training={},
    )
    scorer = ForestScorer(ForestArtifact.model_validate(provisional), trees)
    return scorer.raw_scores(features)


# Gradient boosting (with labels). Shallow trees and a moderate learning rate: the inputs are
# few and already per-customer relative, and the rules' severities carry most of the signal, so
# depth 3 (interactions of three inputs) is enough, and smaller trees generalise to other
# worlds' fraud mixes. Scikit-learn's exact GradientBoostingClassifier rather than the
# histogram one: single-threaded and deterministic for a seed (no OpenMP reductions), and it
# compares float32 rows with float64 thresholds, which the exported walk reproduces exactly.
GBT_TREES = 200
GBT_MAX_DEPTH = 3
GBT_LEARNING_RATE = 0.1
GBT_MIN_SAMPLES_LEAF = 20
# A supervised model needs examples of both classes.
MIN_FRAUD_ROWS = 20


def fit_boosting(
    inputs: npt.NDArray[np.float64], is_fraud: npt.NDArray[np.bool_], *, seed: int
) -> Any:
    """The fitted ``GradientBoostingClassifier`` (rows as ``MODEL_INPUTS``). A ValueError of
    one line when the data cannot train it."""
    from sklearn.ensemble import GradientBoostingClassifier  # noqa: PLC0415

    if inputs.ndim != 2 or inputs.shape[1] != len(MODEL_INPUTS):
        raise ValueError(f"expected rows of {len(MODEL_INPUTS)} inputs, got {inputs.shape}")
    if len(is_fraud) != len(inputs):
        raise ValueError(f"{len(is_fraud)} labels for {len(inputs)} rows")
    if inputs.shape[0] < MIN_TRAINING_ROWS:
        raise ValueError(
            f"{inputs.shape[0]} labelled transactions; a model needs at least {MIN_TRAINING_ROWS}"
        )
    fraud = int(is_fraud.sum())
    if fraud < MIN_FRAUD_ROWS or len(is_fraud) - fraud < MIN_FRAUD_ROWS:
        raise ValueError(
            f"{fraud} fraudulent and {len(is_fraud) - fraud} legitimate labelled transactions; "
            f"a supervised model needs at least {MIN_FRAUD_ROWS} of each"
        )
    model = GradientBoostingClassifier(
        n_estimators=GBT_TREES,
        learning_rate=GBT_LEARNING_RATE,
        max_depth=GBT_MAX_DEPTH,
        min_samples_leaf=GBT_MIN_SAMPLES_LEAF,
        random_state=seed,
    )
    model.fit(inputs, is_fraud.astype(np.int64))
    return model


def export_boosting(model: Any, *, inputs: list[str], training: dict[str, Any]) -> dict[str, Any]:
    """The artifact document of a fitted binary ``GradientBoostingClassifier``."""
    import sklearn  # noqa: PLC0415

    # The log-odds before the first tree (the prior's), as scikit-learn computes it at predict
    # time; it is the same for every row.
    init = float(model._raw_predict_init(np.zeros((1, len(inputs)), dtype=np.float32))[0, 0])
    trees = []
    for estimator in model.estimators_[:, 0]:
        t = estimator.tree_
        left = t.children_left.astype(np.int64)
        right = t.children_right.astype(np.int64)
        leaf = left == -1
        trees.append(
            BoostedTree(
                children_left=left,
                children_right=right,
                feature=np.where(leaf, 0, t.feature).astype(np.int64),
                threshold=np.where(leaf, 0.0, t.threshold).astype(np.float64),
                # Internal nodes' values are recomputed from the leaves (scikit-learn keeps the
                # mean gradient there, not the Newton step its leaves hold): for explain_one.
                value=node_values(left, right, t.value[:, 0, 0], t.weighted_n_node_samples),
            )
        )
    return build_boosted_artifact(
        trees,
        inputs=inputs,
        init=init,
        learning_rate=float(model.learning_rate),
        training={
            **training,
            "n_trees": len(trees),
            "max_depth": int(model.max_depth),
            "sklearn": sklearn.__version__,
        },
    )


def train_boosting(
    inputs: npt.NDArray[np.float64],
    is_fraud: npt.NDArray[np.bool_],
    *,
    seed: int,
    training: dict[str, Any],
) -> dict[str, Any]:
    """Fit gradient-boosted trees on labelled ``MODEL_INPUTS`` rows; return the artifact."""
    model = fit_boosting(inputs, is_fraud, seed=seed)
    return export_boosting(
        model,
        inputs=list(MODEL_INPUTS),
        training={
            **training,
            "seed": seed,
            "rows": int(inputs.shape[0]),
            "fraud_rows": int(is_fraud.sum()),
        },
    )


def train_from_labels(
    features: Sequence[tuple[float, ...]],
    labelled: Sequence[tuple[str, tuple[float, ...]]],
    truth: Labels,
    *,
    seed: int,
    training: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """``streamflow train --labels``: rows of features built in stream order, each with its
    transaction id and the rules' severities; the artifact and a one-line summary. Transactions
    without a label are left out (and counted); a ValueError of one line when too few remain."""
    from streamflow_jobs.labels import coverage_warning  # noqa: PLC0415

    rows: list[tuple[float, ...]] = []
    is_fraud: list[bool] = []
    for row, (tid, severities) in zip(features, labelled, strict=True):
        index = truth.by_id.get(tid)
        if index is not None:
            rows.append(row + severities)
            is_fraud.append(truth.is_fraud(index))
    unlabelled = len(features) - len(rows)
    x = np.array(rows, dtype=np.float64).reshape(len(rows), len(MODEL_INPUTS))
    y = np.array(is_fraud, dtype=np.bool_)
    doc = train_boosting(x, y, seed=seed, training={**training, "unlabelled_rows": unlabelled})
    note = (
        f"trained gradient-boosted trees on {len(rows)} labelled transactions "
        f"({int(y.sum())} fraudulent)"
    )
    warning = coverage_warning(len(rows), len(features))
    return doc, note + (f"; {warning}" if warning else "")
