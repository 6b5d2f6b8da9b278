"""FR-006's reason: when the model drives a decision, say so and name what drove it.

A decision is *model-driven* when it alerts on its score and the rules alone would not have
(their score is under the alert threshold, no rule asked for review or block). The reason names
the (at most three) inputs that drove the model up, each as its observed value against the
customer's own baseline, e.g. "amount 9.3x the customer's mean".

Which inputs drove it: the model's own path attribution (``explain_one``: per-input
contributions, for the gradient-boosted trees to the log-odds, for the IsolationForest to the
log of its anomaly score); a scorer without one falls back to the features furthest from the
customer's baseline, each in units of its rule's threshold. Only model-driven alerts pay for
it (~80 us). Both paths of the detector build this reason from the same floats, so it is the
same bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from streamflow_jobs.events import Reason
from streamflow_jobs.model.features import FEATURE_NAMES, LOG_FIRST_GAP

MAX_DRIVERS = 3

# How far from the baseline a feature is, in units of "as unusual as a rule's threshold":
# used to rank features for a model that cannot attribute its score. Zero: at the baseline.
_SCALE = {
    "amount_log_ratio": math.log(3.0),  # 3x the mean amount (FR-001's default)
    "amount_z": 3.0,
    "velocity_count": 5.0,  # FR-002's default count
    "hour_deviation": 2.0,  # FR-004's default
    "log_home_distance_km": math.log1p(100.0),  # 100 km from the usual places
    "blacklisted": 1.0,
    "log_gap_seconds": 0.0,  # ranked by how short the gap is, below
    "new_payment_method": 1.0,
}


def _unusualness(name: str, value: float) -> float:
    if name == "log_gap_seconds":  # a gap of a minute or less is as odd as a rule threshold
        return max(0.0, (LOG_FIRST_GAP - value) / (LOG_FIRST_GAP - math.log1p(60.0)))
    if name == "velocity_count":
        return max(0.0, value - 1.0) / (_SCALE[name] - 1.0)
    return max(0.0, value) / _SCALE[name]


def describe(name: str, value: float) -> str:
    """One feature's observed value against the customer's baseline, in words."""
    if name == "amount_log_ratio":
        return f"amount {math.exp(value):.1f}x the customer's mean"
    if name == "amount_z":
        return f"amount {value:.1f} std devs from the customer's mean"
    if name == "velocity_count":
        return f"{value:.0f} transactions in the velocity window"
    if name == "hour_deviation":
        return f"hour {value:.1f} std devs from the customer's usual"
    if name == "log_home_distance_km":
        return f"{math.expm1(value):.0f} km from the customer's usual places"
    if name == "blacklisted":
        return "customer or store on the blacklist" if value else "not blacklisted"
    if name == "log_gap_seconds":
        return f"{math.expm1(value):.0f} s after the customer's previous transaction"
    if name == "new_payment_method":
        return "a payment method new for the customer" if value else "a known payment method"
    if name.startswith("severity_"):
        return f"{name.removeprefix('severity_').replace('_', ' ')} rule at severity {value:.2f}"
    return f"{name} {value:.4g}"


def drivers(
    model: Any, features: Sequence[float], severities: Sequence[float]
) -> list[tuple[str, float]]:
    """The inputs that drove the model's score up on this row, strongest first (name, value):
    the model's own attribution when it has one, else the features furthest from the baseline."""
    explain = getattr(model, "explain_one", None)
    if explain is not None:
        row = model.input_row(tuple(features), tuple(severities))
        values = dict(zip(model.inputs, row, strict=True))
        return [(n, values[n]) for n, c in explain(row) if c > 0][:MAX_DRIVERS]
    ranked = sorted(
        (-_unusualness(n, v), n, v)
        for n, v in zip(FEATURE_NAMES, features, strict=True)
        if _unusualness(n, v) > 0
    )
    return [(n, v) for _, n, v in ranked[:MAX_DRIVERS]]


def model_reason(model: Any, outcome: Any, ml: float, threshold: float) -> Reason:
    """FR-006 for a model-driven decision on ``outcome`` (a RuleOutcome) scored ``ml``."""
    named = drivers(model, outcome.features, outcome.severities)
    because = "; ".join(describe(n, v) for n, v in named) or "no single input stands out"
    return Reason(
        "FR-006",
        "model",
        round(ml, 4),
        threshold,
        ml,
        f"model score {ml:.3f} drove this alert: {because}",
    )
