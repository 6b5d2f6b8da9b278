"""The live demo's report: throughput, decision latency, alerts by rule (with sample reasons),
precision and recall against the generator's labels, and a PNG (``make demo``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from streamflow_jobs.labels import load_labels


def build_live_report(summary_path: Path, alerts_path: Path, labels_path: Path,
                      output_dir: Path) -> str:  # fmt: skip
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    summary: dict[str, Any] = orjson.loads(summary_path.read_bytes())
    labels = load_labels(labels_path)
    fraud_ids = {i for i, c in enumerate(labels.classes) if c.is_fraud}
    alerts = [orjson.loads(x) for x in alerts_path.read_bytes().splitlines() if x.strip()]
    alerted = {a["transaction_id"] for a in alerts}
    fraud = {t for t, label in labels.by_id.items() if label in fraud_ids}
    tp = len(alerted & fraud)
    per_pattern: dict[str, tuple[int, int]] = {}
    fraud_names = {c.name for c in labels.classes if c.is_fraud}
    for t, label in labels.by_id.items():
        name = labels.names[label]
        hit, total = per_pattern.get(name, (0, 0))
        per_pattern[name] = (hit + (t in alerted), total + 1)
    reasons: dict[str, str] = {}
    by_rule: Counter[str] = Counter()
    for a in alerts:
        for r in a["reasons"]:
            by_rule[r["code"]] += 1
            reasons.setdefault(r["code"], r["message"])
    lat = summary["decision_latency_ms"]
    lines = [
        f"StreamFlow live pipeline report: run {summary['run_id']}",
        "",
        f"events produced      {summary['produced']:>9}   in {summary['seconds']} s "
        f"({summary['events_per_second']} events/s end to end)",
        f"bronze rows          {summary['bronze_transactions']:>9}   dead letters "
        f"{summary['dead_letters']} {summary.get('errors') or ''}",
        f"decision latency     p50 {lat['p50']} ms   p99 {lat['p99']} ms   "
        f"(produce -> alert appended, {lat['count']} alerts)",
        f"alerts               {len(alerts):>9}   precision "
        f"{tp / max(1, len(alerts)):.3f}   recall {tp / max(1, len(fraud)):.3f} "
        f"({tp} of {len(fraud)} injected fraud events)",
        "",
        "alerts by rule (one example reason each):",
    ]
    for code, n in sorted(by_rule.items()):
        lines.append(f"  {code}  {n:>6}   e.g. {reasons[code]}")
    if not by_rule:
        lines.append("  (ML score only)")
    lines += ["", "per pattern: alerted / events"]
    for name, (hit, total) in sorted(per_pattern.items()):
        kind = "recall" if name in fraud_names else "alert rate"
        lines.append(f"  {name:<22} {hit:>6} / {total:<7} {kind} {hit / max(1, total):.3f}")
    text = "\n".join(lines) + "\n"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "live-report.txt").write_text(text, "utf-8")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    codes = sorted(by_rule)
    left.bar(codes, [by_rule[c] for c in codes], color="#c0392b")
    left.set_title(f"alerts by rule ({len(alerts)} alerts)")
    patterns = [n for n in sorted(per_pattern) if n in fraud_names]
    right.barh(patterns, [per_pattern[n][0] / max(1, per_pattern[n][1]) for n in patterns],
               color="#2980b9")  # fmt: skip
    right.set_xlim(0, 1)
    right.set_title(f"recall per fraud pattern; p99 latency {lat['p99']} ms")
    fig.tight_layout()
    fig.savefig(output_dir / "live-report.png", dpi=90)
    plt.close(fig)
    return text
