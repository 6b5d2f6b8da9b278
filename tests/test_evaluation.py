"""Evaluation of decisions against labels: alert precision/recall, average precision, per-pattern
alert rates (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from streamflow_jobs.evaluation import average_precision, evaluate
from streamflow_jobs.labels import LabelClass, Labels

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    y = rng.random(n) < rng.uniform(0.005, 0.5)
    y[0], y[1] = True, False
    # Coarse scores: many ties, which must count as one threshold.
    scores = np.round(rng.random(n) * 0.6 + y * rng.random(n) * 0.5, int(rng.integers(1, 4)))
    ours = average_precision(y.tolist(), scores.tolist())
    assert ours == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    # The order of the input does not matter.
    perm = rng.permutation(n)
    assert average_precision(y[perm].tolist(), scores[perm].tolist()) == pytest.approx(ours)


def test_average_precision_needs_both_classes_and_clean_input() -> None:
    assert average_precision([True, True], [0.1, 0.2]) is None
    assert average_precision([False], [0.1]) is None
    assert average_precision([True, False], [1.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="shape"):
        average_precision([True, False], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([True, False], [float("nan"), 0.1])


def test_evaluate_joins_decisions_with_labels() -> None:
    classes = [
        LabelClass("legit", False),
        LabelClass("velocity_burst", True),
        LabelClass("impossible_travel", True),
    ]
    labels = Labels({"a": 0, "b": 0, "c": 1, "d": 1, "e": 2, "f": 0}, classes)
    decisions = [
        {"transaction_id": "a", "score": 0.1, "is_alert": False},
        {"transaction_id": "b", "score": 0.8, "is_alert": True},  # a false alert
        {"transaction_id": "c", "score": 0.9, "is_alert": True},
        {"transaction_id": "d", "score": 0.3, "is_alert": False},  # missed
        {"transaction_id": "e", "score": 0.95, "is_alert": True},
        {"transaction_id": "zz", "score": 0.99, "is_alert": True},  # no label: left out
    ]
    ev = evaluate(decisions, labels)
    assert (ev.decisions, ev.unlabelled, ev.labelled) == (6, 1, 5)
    assert (ev.fraud, ev.alerts, ev.true_alerts) == (3, 3, 2)
    assert ev.precision == pytest.approx(2 / 3) and ev.recall == pytest.approx(2 / 3)
    assert ev.alert_rate == pytest.approx(3 / 5)
    # Ranking e, c, b, d, a: precision 1, 1, 2/3, 3/4 at recalls 1/3, 2/3, 2/3, 1.
    assert ev.average_precision == pytest.approx((1 + 1 + 0.75) / 3)
    rates = {p.name: (p.events, p.alerted, p.alert_rate) for p in ev.patterns}
    assert rates == {
        "legit": (2, 1, 0.5),
        "velocity_burst": (2, 1, 0.5),
        "impossible_travel": (1, 1, 1.0),
    }
    summary = ev.to_dict()
    assert summary["patterns"]["impossible_travel"]["alert_rate"] == 1.0
    assert summary["labelled"] == 5 and summary["precision"] == ev.precision


def test_evaluate_without_alerts_or_fraud_says_none() -> None:
    labels = Labels({"a": 0}, [LabelClass("legit", False)])
    ev = evaluate([{"transaction_id": "a", "score": 0.2, "is_alert": False}], labels)
    assert ev.precision is None and ev.recall is None and ev.average_precision is None
    empty = evaluate([], labels)
    assert empty.alert_rate is None and empty.patterns == ()
