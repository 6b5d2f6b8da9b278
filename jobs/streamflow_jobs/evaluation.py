"""How well decisions catch labelled fraud: alert precision and recall, the score's average
precision and each pattern's alert rate. Pure functions (no I/O): the report, the backtest and the
benchmarks read the files and pass decisions and labels in.

A decision is a mapping with at least ``transaction_id``, ``score`` and ``is_alert`` (what the
replay writes). Decisions without a label are counted (``unlabelled``) and left out of every
metric; a metric that cannot be computed (no alert, no fraud, a single class) is None, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from streamflow_jobs.labels import Labels


@dataclass(frozen=True)
class PatternStats:
    name: str
    is_fraud: bool
    events: int
    alerted: int

    @property
    def alert_rate(self) -> float:
        return self.alerted / self.events


@dataclass(frozen=True)
class Evaluation:
    decisions: int  # all decisions given
    unlabelled: int  # decisions whose transaction has no label (left out below)
    fraud: int
    alerts: int
    true_alerts: int
    precision: float | None  # of alerts (None without alerts)
    recall: float | None  # of fraud (None without fraud)
    average_precision: float | None  # of the score (None unless both classes are present)
    patterns: tuple[PatternStats, ...]  # in the labels' order of first appearance

    @property
    def labelled(self) -> int:
        return self.decisions - self.unlabelled

    @property
    def alert_rate(self) -> float | None:
        return self.alerts / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (patterns keyed by name, with their alert rate)."""
        out = asdict(self)
        out["labelled"] = self.labelled
        out["alert_rate"] = self.alert_rate
        out["patterns"] = {
            p.name: {
                "is_fraud": p.is_fraud,
                "events": p.events,
                "alerted": p.alerted,
                "alert_rate": p.alert_rate,
            }
            for p in self.patterns
        }
        return out


def average_precision(is_fraud: ArrayLike, scores: ArrayLike) -> float | None:
    """Average precision of ``scores`` ranking fraud first: sum over the distinct score
    thresholds of (recall gained) x (precision there), as scikit-learn's
    ``average_precision_score`` computes it (ties are one threshold, so their order is moot).
    None unless both classes are present."""
    y = np.asarray(is_fraud, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"is_fraud and scores differ in shape: {y.shape} and {s.shape}")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        return None
    if np.isnan(s).any():
        raise ValueError("scores hold NaN")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last position of each run of equal scores: one threshold per distinct score.
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(tp, prepend=0) / positives
    return float(np.sum(recall_gain * precision))


def evaluate(decisions: Iterable[Mapping[str, Any]], labels: Labels) -> Evaluation:
    """Join decisions with their labels by transaction id and measure them."""
    total = unlabelled = 0
    kinds: list[int] = []
    scores: list[float] = []
    alerts: list[bool] = []
    for d in decisions:
        total += 1
        kind = labels.by_id.get(str(d["transaction_id"]))
        if kind is None:
            unlabelled += 1
            continue
        kinds.append(kind)
        scores.append(float(d["score"]))
        alerts.append(bool(d["is_alert"]))
    fraud_of = np.array([c.is_fraud for c in labels.classes], dtype=bool)
    k = np.asarray(kinds, dtype=np.int64)
    y = fraud_of[k] if len(k) else np.zeros(0, dtype=bool)
    alert = np.asarray(alerts, dtype=bool)
    n_alerts, n_fraud, hits = int(alert.sum()), int(y.sum()), int((alert & y).sum())
    events = np.bincount(k, minlength=len(labels.classes))
    alerted = np.bincount(k[alert], minlength=len(labels.classes))
    return Evaluation(
        decisions=total,
        unlabelled=unlabelled,
        fraud=n_fraud,
        alerts=n_alerts,
        true_alerts=hits,
        precision=hits / n_alerts if n_alerts else None,
        recall=hits / n_fraud if n_fraud else None,
        average_precision=average_precision(y, scores) if len(k) else None,
        patterns=tuple(
            PatternStats(c.name, c.is_fraud, int(events[i]), int(alerted[i]))
            for i, c in enumerate(labels.classes)
            if events[i]
        ),
    )
