"""The demo's report: a text summary and a PNG (score distribution by label, PR curves).

The decisions file is read like any input: a line that is not a decision (blank, not JSON, a dead
letter given by mistake) is counted and named, never a traceback; decisions that match no label
are an error, not a report of "0 fraud (nan%)"; a decision without an ML score is shown as
missing, not as a score of 0.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from streamflow_jobs.labels import Labels, coverage_warning

_DECISION_KEYS = ("transaction_id", "score", "rules_score", "ml_score", "is_alert")


class ReportError(ValueError):
    """Nothing to report on (the message says why)."""


def _join(decisions: Path, labels: Labels) -> tuple[dict[str, np.ndarray[Any, Any]], list[str]]:
    cols: dict[str, list[float]] = {"score": [], "rules": [], "ml": [], "alert": [], "y": []}
    pattern: list[int] = []
    bad: Counter[str] = Counter()
    first_bad: dict[str, int] = {}
    total = 0
    with decisions.open("rb") as f:
        for n, line in enumerate(f, start=1):
            problem = None
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                problem = "blank" if not line.strip() else "not JSON"
            else:
                if not isinstance(d, dict):
                    problem = "not a JSON object"
                elif "error_type" in d and "payload" in d:
                    problem = "a dead letter, not a decision"
                elif any(k not in d for k in _DECISION_KEYS):
                    problem = "missing decision fields"
            if problem is not None:
                bad[problem] += 1
                first_bad.setdefault(problem, n)
                continue
            total += 1
            label = labels.by_id.get(str(d["transaction_id"]))
            if label is None:
                continue
            cols["score"].append(d["score"])
            cols["rules"].append(d["rules_score"])
            cols["ml"].append(np.nan if d["ml_score"] is None else d["ml_score"])
            cols["alert"].append(bool(d["is_alert"]))
            cols["y"].append(labels.is_fraud(label))
            pattern.append(label)
    warnings = [
        f"{count} lines of {decisions} skipped: {problem} (first on line {first_bad[problem]})"
        for problem, count in bad.items()
    ]
    if total == 0:
        raise ReportError(f"{decisions} holds no decisions ({', '.join(warnings) or 'empty'})")
    if not pattern:
        raise ReportError(
            f"none of the {total} decisions in {decisions} has a label: wrong labels file?"
        )
    if (warning := coverage_warning(len(pattern), total)) is not None:
        warnings.append(warning)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    out["pattern"] = np.asarray(pattern, dtype=np.int64)
    return out, warnings


def reliability(
    scores: np.ndarray[Any, Any], is_fraud: np.ndarray[Any, Any], bins: int = 10
) -> list[tuple[float, float, int, float, float]]:
    """Per score bin (equal width over [0, 1]) with decisions: (low, high, decisions, mean
    score, share of fraud). A calibrated score has mean score ~= share of fraud in every bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            out.append((float(edges[b]), float(edges[b + 1]), n, float(scores[mask].mean()),
                        float(is_fraud[mask].mean())))  # fmt: skip
    return out


def build_report(
    decisions: Path, labels: Labels, text_out: IO[bytes], png_out: IO[bytes]
) -> tuple[str, list[str]]:
    """Write the text and the PNG; return the text and the warnings to show."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: PLC0415

    data, warnings = _join(decisions, labels)
    y = data["y"].astype(bool)
    alert = data["alert"].astype(bool)
    has_ml = ~np.isnan(data["ml"])
    lines = [f"StreamFlow detection report: {decisions.name}", ""]
    lines.append(f"transactions  {len(y):>9}   fraud {int(y.sum())} ({y.mean():.2%})")
    precision = f"{(alert & y).sum() / alert.sum():.3f}" if alert.any() else "n/a (no alerts)"
    recall = f"{(alert & y).sum() / y.sum():.3f}" if y.any() else "n/a (no fraud labelled)"
    lines.append(f"alerts        {int(alert.sum()):>9}   precision {precision}   recall {recall}")
    ap: dict[str, float | None] = {}
    if 0 < y.sum() < len(y):
        ap["score"] = float(average_precision_score(y, data["score"]))
        ap["rules"] = float(average_precision_score(y, data["rules"]))
        ml_ok = has_ml.all()
        ap["ml"] = float(average_precision_score(y, data["ml"])) if ml_ok else None
        shown = {k: ("missing" if v is None else f"{v:.4f}") for k, v in ap.items()}
        lines.append(
            f"average precision: blend {shown['score']}   rules only {shown['rules']}   "
            f"ML only {shown['ml']}"
        )
    if not has_ml.all():
        lines.append(
            f"ML score: missing on {int((~has_ml).sum())} of {len(y)} decisions (rules only)"
        )
    lines.append("")
    lines.append(f"{'pattern':<28}{'events':>8}{'alerted':>10}")
    for i, c in enumerate(labels.classes):
        mask = data["pattern"] == i
        if mask.any():
            lines.append(f"{c.name:<28}{int(mask.sum()):>8}{alert[mask].mean():>10.1%}")
    curve = reliability(data["score"], y)
    lines.append("")
    lines.append("reliability: how often a score is right (the score as a fraud probability)")
    lines.append(f"{'score bin':<14}{'decisions':>10}{'mean score':>12}{'fraud share':>13}")
    for low, high, n, mean_score, share in curve:
        lines.append(f"{low:.1f} - {high:.1f}{n:>14}{mean_score:>12.3f}{share:>13.3f}")
    text = "\n".join(lines) + "\n"
    text_out.write(text.encode("utf-8"))

    fig, (left, right, third) = plt.subplots(1, 3, figsize=(17, 4.5))
    bins = np.linspace(0, 1, 51)
    left.hist(data["score"][~y], bins=bins, alpha=0.6, label="legitimate", color="tab:blue")
    left.hist(data["score"][y], bins=bins, alpha=0.7, label="fraud", color="tab:red")
    left.set_yscale("log")
    left.set_xlabel("score")
    left.set_ylabel("transactions (log)")
    left.set_title("Score distribution by label")
    left.legend()
    for name, title in (("score", "blend"), ("rules", "rules only"), ("ml", "ML only")):
        if ap.get(name) is not None:
            p, r, _ = precision_recall_curve(y, data[name])
            right.plot(r, p, label=f"{title} (AP {ap[name]:.3f})")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("Precision-recall")
    right.set_ylim(0, 1.02)
    if ap:
        right.legend(loc="lower left")
    third.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    third.plot([c[3] for c in curve], [c[4] for c in curve], marker="o", label="score")
    third.set_xlabel("mean score in bin")
    third.set_ylabel("share of fraud in bin")
    third.set_title("Reliability")
    third.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(png_out, dpi=110, format="png")
    plt.close(fig)
    return text, warnings
