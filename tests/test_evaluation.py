"""Evaluating decisions held in memory against labels: the replay's metrics, joined by id."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamflow_jobs.evaluation import evaluate
from streamflow_jobs.labels import LabelClass, Labels

pytestmark = pytest.mark.unit


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
    out = evaluate(decisions, labels)
    assert (out["labelled"], out["fraud"], out["alerts"]) == (5, 3, 3)
    assert out["coverage"] == pytest.approx(5 / 6)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    # Ranking e, c, b, d, a: precision 1, 1, 2/3, 3/4 at recalls 1/3, 2/3, 2/3, 1.
    assert out["average_precision"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert out["per_pattern"] == {
        "legit": {"events": 2, "alert_rate": 0.5},
        "velocity_burst": {"events": 2, "recall": 0.5},
        "impossible_travel": {"events": 1, "recall": 1.0},
    }


def test_evaluate_gives_what_replay_reports(tmp_path: Path) -> None:
    """The same numbers as `streamflow replay --labels` on a generated world."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from streamflow_jobs.cli import app  # noqa: PLC0415
    from streamflow_jobs.generator import Generator, GeneratorConfig  # noqa: PLC0415
    from streamflow_jobs.labels import load_labels  # noqa: PLC0415

    events, label_file = tmp_path / "tx.jsonl", tmp_path / "labels.jsonl"
    gen = Generator(GeneratorConfig(events=3000, seed=4, customers=80, fraud_rate=0.04))
    with events.open("wb") as ev, label_file.open("wb") as lab:
        for event, label in gen.generate():
            ev.write(orjson.dumps(event) + b"\n")
            lab.write(orjson.dumps(label) + b"\n")
    out, summary = tmp_path / "decisions.jsonl", tmp_path / "summary.json"
    args = ["replay", "--input", str(events), "--output", str(out), "--labels", str(label_file)]
    result = CliRunner().invoke(app, [*args, "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    ours = evaluate(decisions, load_labels(label_file))
    theirs = orjson.loads(summary.read_bytes())["metrics"]
    for key in ("precision", "recall", "average_precision", "per_pattern", "labelled", "fraud"):
        assert ours[key] == theirs[key], key
    assert ours["alerts"] == sum(d["is_alert"] for d in decisions)


def test_evaluate_without_alerts_or_fraud_says_none() -> None:
    labels = Labels({"a": 0}, [LabelClass("legit", False)])
    out = evaluate([{"transaction_id": "a", "score": 0.2, "is_alert": False}], labels)
    assert out["precision"] is None and out["recall"] is None
    assert "average_precision" not in out and out["alerts"] == 0
