"""How well decisions catch labelled fraud, from decisions in memory (no I/O).

The metrics themselves are the replay's (:func:`streamflow_jobs.replay.quality_metrics`:
precision and recall of the alerts, average precision and ROC AUC of the score, recall at a 1 %
alert rate, each pattern's alert rate); this module only joins decisions with their labels, so a
backtest or a benchmark that holds decisions (the replay's dicts, or the detector's) measures them
exactly as ``streamflow replay --labels`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from streamflow_jobs.labels import Labels


def evaluate(decisions: Iterable[Mapping[str, Any]], labels: Labels) -> dict[str, Any]:
    """Join decisions (mappings with ``transaction_id``, ``score`` and ``is_alert``) with their
    labels and measure them. Decisions without a label are left out of the metrics and show in
    ``coverage``; ``alerts`` counts the labelled decisions that alerted."""
    from streamflow_jobs.replay import quality_metrics  # noqa: PLC0415

    total = 0
    scores: list[float] = []
    alerted: list[bool] = []
    kinds: list[int] = []
    for d in decisions:
        total += 1
        kind = labels.by_id.get(str(d["transaction_id"]))
        if kind is not None:
            scores.append(float(d["score"]))
            alerted.append(bool(d["is_alert"]))
            kinds.append(kind)
    alerts = np.array(alerted, dtype=bool)
    out = quality_metrics(
        np.array(scores, dtype=np.float64),
        alerts,
        np.array(kinds, dtype=np.int64),
        labels,
        decisions=total,
    )
    out["alerts"] = int(alerts.sum())
    return out
