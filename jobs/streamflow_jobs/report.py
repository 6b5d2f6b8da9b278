"""The demo's report: a text summary and a PNG (score distribution by label, PR curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamflow_jobs.replay import Labels, is_fraud_pattern, load_labels


def _join(decisions: Path, labels: Labels) -> dict[str, np.ndarray[Any, Any]]:
    cols: dict[str, list[float]] = {"score": [], "rules": [], "ml": [], "alert": [], "y": []}
    pattern: list[int] = []
    fraud_ids = {i for i, n in enumerate(labels.names) if is_fraud_pattern(n)}
    with decisions.open("rb") as f:
        for line in f:
            d = orjson.loads(line)
            label = labels.by_id.get(d["transaction_id"])
            if label is None:
                continue
            cols["score"].append(d["score"])
            cols["rules"].append(d["rules_score"])
            cols["ml"].append(d["ml_score"] if d["ml_score"] is not None else 0.0)
            cols["alert"].append(d["is_alert"])
            cols["y"].append(label in fraud_ids)
            pattern.append(label)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    out["pattern"] = np.asarray(pattern, dtype=np.int64)
    return out


def build_report(decisions: Path, labels_path: Path, output_dir: Path) -> str:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: PLC0415

    labels = load_labels(labels_path)
    data = _join(decisions, labels)
    y = data["y"].astype(bool)
    alert = data["alert"].astype(bool)
    lines = [f"StreamFlow detection report: {decisions.name}", ""]
    lines.append(f"transactions  {len(y):>9}   fraud {int(y.sum())} ({y.mean():.2%})")
    tp = int((alert & y).sum())
    lines.append(
        f"alerts        {int(alert.sum()):>9}   precision {tp / max(1, alert.sum()):.3f}"
        f"   recall {tp / max(1, y.sum()):.3f}"
    )
    ap = {}
    if 0 < y.sum() < len(y):
        for name in ("score", "rules", "ml"):
            ap[name] = average_precision_score(y, data[name])
        lines.append(
            "average precision: "
            + "   ".join(
                f"{k} {v:.4f}"
                for k, v in (
                    ("blend", ap["score"]),
                    ("rules only", ap["rules"]),
                    ("ML only", ap["ml"]),
                )
            )
        )
    lines.append("")
    lines.append(f"{'pattern':<24}{'events':>8}{'alerted':>10}")
    for i, name in enumerate(labels.names):
        mask = data["pattern"] == i
        if mask.any():
            lines.append(f"{name:<24}{int(mask.sum()):>8}{alert[mask].mean():>10.1%}")
    text = "\n".join(lines) + "\n"
    (output_dir / "report.txt").write_text(text, encoding="utf-8")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(0, 1, 51)
    left.hist(data["score"][~y], bins=bins, alpha=0.6, label="legitimate", color="tab:blue")
    left.hist(data["score"][y], bins=bins, alpha=0.7, label="fraud", color="tab:red")
    left.set_yscale("log")
    left.set_xlabel("score")
    left.set_ylabel("transactions (log)")
    left.set_title("Score distribution by label")
    left.legend()
    if ap:
        for name, title in (("score", "blend"), ("rules", "rules only"), ("ml", "ML only")):
            p, r, _ = precision_recall_curve(y, data[name])
            right.plot(r, p, label=f"{title} (AP {ap[name]:.3f})")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("Precision-recall")
    right.set_ylim(0, 1.02)
    right.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(output_dir / "report.png", dpi=110)
    plt.close(fig)
    return text
