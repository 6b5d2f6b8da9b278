"""Backtest: a candidate (rules and/or model) tried on history beside the baseline, in one pass.

The candidate runs as the baseline detector's shadow (``Detector(..., shadow=candidate)``), so
both read the same events through the replay's evaluator, each with its own per-customer state,
and the numbers compared are exactly what each would have decided in production. Only the
transactions whose action or alert changed are written out, one JSON line each; the summary
counts both sides (and scores them against labels when given).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import msgspec
import numpy as np

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import FraudDecision, Reason, ShadowVerdict
from streamflow_jobs.labels import Labels
from streamflow_jobs.replay import ReplaySummary, quality_metrics, replay

SIDES = ("baseline", "candidate")


class SideView(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One side's decision on a changed transaction (the decision fields that can differ)."""

    score: float
    action: str
    is_alert: bool
    ml_score: float | None
    reasons: list[Reason]
    rules_version: str
    model_version: str | None
    rules_score: float


class Change(msgspec.Struct, frozen=True, gc=False):
    transaction_id: str
    customer_id: str
    event_time: datetime
    baseline: SideView
    candidate: SideView


@dataclass
class SideTally:
    """What one side decided over the whole input."""

    alerts: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    per_day: Counter[str] = field(default_factory=Counter)
    scores: list[float] = field(default_factory=list)
    alerted: list[bool] = field(default_factory=list)

    def add(self, day: str, score: float, action: str, alert: bool, reasons: list[Reason]) -> None:
        self.by_action[action] += 1
        if alert:
            self.alerts += 1
            self.per_day[day] += 1
            for r in reasons:
                self.by_rule[r.code] += 1

    def to_dict(self, decisions: int) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "alert_rate": round(self.alerts / decisions, 6) if decisions else None,
            "alerts_by_action": {a: self.by_action[a] for a in ("review", "block")},
            "alerts_by_rule": dict(sorted(self.by_rule.items())),
            "actions": {a: self.by_action[a] for a in ("allow", "review", "block")},
        }


@dataclass
class BacktestResult:
    replay: ReplaySummary
    sides: dict[str, SideTally]
    changed: int
    changed_by: Counter[str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per labelled decision: (label class id, baseline score, candidate score), for the report.
    labelled: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        decisions = self.replay.decisions
        out: dict[str, Any] = {}
        for side in SIDES:
            tally = self.sides[side].to_dict(decisions)
            tally["config"] = (
                self.replay.config if side == "baseline" else self.replay.config.get("shadow", {})
            )
            tally.update(self.metrics.get(side, {}))
            out[side] = tally
        out["changed"] = self.changed
        out["changed_by"] = dict(sorted(self.changed_by.items()))
        out["decisions"] = decisions
        out["dead_letters"] = self.replay.dead_letters
        out["duplicates"] = self.replay.duplicates
        out["lines"] = self.replay.lines
        out["alerts_per_day"] = {
            side: dict(sorted(self.sides[side].per_day.items())) for side in SIDES
        }
        return out


def _view(d: FraudDecision | ShadowVerdict) -> SideView:
    return SideView(
        d.score, d.action, d.is_alert, d.ml_score, d.reasons, d.rules_version, d.model_version,
        d.rules_score,
    )  # fmt: skip


def backtest(
    stream: IO[bytes],
    changes: IO[bytes],
    dead_letters: IO[bytes],
    baseline: Detector,
    candidate: Detector,
    *,
    source_name: str = "-",
    labels: Labels | None = None,
    progress: Any = None,
) -> BacktestResult:
    """Run ``baseline`` and ``candidate`` over ``stream`` in one pass; write the changed
    decisions to ``changes`` and the dead letters (the same for both sides) to
    ``dead_letters``."""
    detector = Detector(baseline.rules, baseline.model, shadow=candidate)
    sides = {side: SideTally() for side in SIDES}
    base, cand = sides["baseline"], sides["candidate"]
    changed_by: Counter[str] = Counter()
    label_ids: list[int] = []
    encode_lines = msgspec.json.Encoder().encode_lines
    counted = [0]

    def observe(decisions: list[FraudDecision]) -> None:
        out = []
        for d in decisions:
            s = d.shadow
            if s is None:  # the challenger refused the event (a conflict only it saw)
                s = ShadowVerdict(0.0, 0.0, "allow", False, None, [], "-", None)
            day = d.event_time.date().isoformat()  # the local date of the event
            base.add(day, d.score, d.action, d.is_alert, d.reasons)
            cand.add(day, s.score, s.action, s.is_alert, s.reasons)
            if labels is not None:
                label = labels.by_id.get(d.transaction_id)
                if label is not None:
                    base.scores.append(d.score)
                    base.alerted.append(d.is_alert)
                    cand.scores.append(s.score)
                    cand.alerted.append(s.is_alert)
                    label_ids.append(label)
            if d.action != s.action or d.is_alert != s.is_alert:
                changed_by[f"{d.action}->{s.action}"] += 1
                out.append(
                    Change(
                        d.transaction_id,
                        d.customer_id,
                        d.event_time,
                        _view(d),
                        _view(s),
                    )
                )
        counted[0] += len(out)
        if out:
            changes.write(encode_lines(out))

    summary = replay(
        stream,
        None,  # both sides' decisions are observed, not written
        dead_letters,
        detector,
        source_name=source_name,
        progress=progress,
        observe=observe,
    )
    result = BacktestResult(summary, sides, counted[0], changed_by)
    if labels is not None:
        ids = np.array(label_ids, dtype=np.int64)
        result.labelled = {"label_ids": ids}
        for side in SIDES:
            tally = sides[side]
            scores = np.array(tally.scores, dtype=np.float64)
            result.labelled[side] = scores
            result.metrics[side] = quality_metrics(
                scores,
                np.array(tally.alerted, dtype=bool),
                ids,
                labels,
                decisions=summary.decisions,
            )
    return result


def write_png(result: BacktestResult, labels: Labels | None, png_out: IO[bytes]) -> None:
    """Both sides side by side: precision-recall curves (with labels) and alerts per day."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = None
    if labels is not None and len(result.labelled.get("label_ids", ())):
        fraud = [i for i, c in enumerate(labels.classes) if c.is_fraud]
        y = np.isin(result.labelled["label_ids"], fraud)
    if y is not None and 0 < y.sum() < len(y):
        for side in SIDES:
            scores = result.labelled[side]
            p, r, _ = precision_recall_curve(y, scores)
            ap = average_precision_score(y, scores)
            left.plot(r, p, label=f"{side} (AP {ap:.3f})")
            m = result.metrics.get(side, {})
            if m.get("precision") is not None and m.get("recall") is not None:
                left.scatter([m["recall"]], [m["precision"]], marker="o", zorder=3)
        left.legend(loc="lower left")
        left.set_ylim(0, 1.02)
    else:
        left.text(0.5, 0.5, "no labels: no precision-recall", ha="center", va="center")
    left.set_xlabel("recall")
    left.set_ylabel("precision")
    left.set_title("Precision-recall (dot: the alert policy)")
    days = sorted(set(result.sides["baseline"].per_day) | set(result.sides["candidate"].per_day))
    x = np.arange(len(days))
    for offset, side in ((-0.2, "baseline"), (0.2, "candidate")):
        per_day = result.sides[side].per_day
        right.bar(x + offset, [per_day[d] for d in days], width=0.4, label=side)
    step = max(1, len(days) // 10)
    right.set_xticks(x[::step], days[::step], rotation=30, ha="right")
    right.set_ylabel("alerts")
    right.set_title("Alerts per day")
    right.legend()
    fig.tight_layout()
    fig.savefig(png_out, dpi=110, format="png")
    plt.close(fig)


def table_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The terminal table's rows: (what, baseline, candidate)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    b, c = summary["baseline"], summary["candidate"]
    rows = [
        ("rules version", b["config"].get("rules_version"), c["config"].get("rules_version")),
        ("model version", b["config"].get("model_version"), c["config"].get("model_version")),
        ("alerts", b["alerts"], c["alerts"]),
        ("alert rate", b["alert_rate"], c["alert_rate"]),
        ("review", b["alerts_by_action"]["review"], c["alerts_by_action"]["review"]),
        ("block", b["alerts_by_action"]["block"], c["alerts_by_action"]["block"]),
    ]
    for code in sorted(set(b["alerts_by_rule"]) | set(c["alerts_by_rule"])):
        rows.append((f"alerts with {code}", b["alerts_by_rule"].get(code, 0),
                     c["alerts_by_rule"].get(code, 0)))  # fmt: skip
    for key in ("precision", "recall", "average_precision"):
        if key in b or key in c:
            rows.append((key, b.get(key), c.get(key)))
    return [(name, fmt(x), fmt(y)) for name, x, y in rows]
