"""Shadow runs and `streamflow backtest` (a fixed interface): a challenger beside the live
detector changes nothing of it, and decides exactly what it would decide alone."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from typer.testing import CliRunner

from streamflow_jobs.cli import app
from streamflow_jobs.detector import Detector
from streamflow_jobs.events import FraudDecision, parse_transaction
from streamflow_jobs.generator import Generator, GeneratorConfig
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.replay import replay
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState

pytestmark = pytest.mark.unit
runner = CliRunner()
CANDIDATE = {"version": "cand", "alert_threshold": 0.5, "velocity": {"max_count": 3}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("world")
    gen = Generator(GeneratorConfig(events=4000, seed=11, customers=200))
    lines, labels = [], []
    for event, label in gen.generate():
        lines.append(orjson.dumps(event))
        labels.append(orjson.dumps(label))
    # A repeated event and a conflicting copy: both sides see the same duplicates.
    lines.insert(100, lines[50])
    conflict = orjson.loads(lines[60])
    conflict["amount"] = "9999.99"
    lines.insert(120, orjson.dumps(conflict))
    (root / "tx.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / "labels.jsonl").write_bytes(b"\n".join(labels) + b"\n")
    (root / "cand.yaml").write_text(RulesConfig.model_validate(CANDIDATE).to_yaml())
    return {"root": root, "lines": lines}


def decisions_of(lines: list[bytes], detector: Detector) -> list[dict[str, Any]]:
    out, dead = io.BytesIO(), io.BytesIO()
    replay(io.BytesIO(b"\n".join(lines)), out, dead, detector)
    return [orjson.loads(x) for x in out.getvalue().splitlines()]


def test_a_shadow_changes_nothing_and_decides_as_it_would_alone(world: dict[str, Any]) -> None:
    model = load_model()
    candidate_rules = RulesConfig.model_validate(CANDIDATE)
    alone = decisions_of(world["lines"], Detector(RulesConfig(), model))
    challenger = decisions_of(world["lines"], Detector(candidate_rules, model))
    both = decisions_of(
        world["lines"], Detector(RulesConfig(), model, shadow=Detector(candidate_rules, model))
    )
    assert [{k: v for k, v in d.items() if k != "shadow"} for d in both] == alone
    verdict = ("score", "rules_score", "action", "is_alert", "ml_score", "reasons",
               "rules_version", "model_version")  # fmt: skip
    for d, c in zip(both, challenger, strict=True):
        assert d["shadow"] == {k: c[k] for k in verdict}
    assert any(d["shadow"]["action"] != d["action"] for d in both), "the candidate differs"


def test_the_per_event_path_carries_the_same_shadow_as_the_replay(
    world: dict[str, Any],
) -> None:
    model = load_model()
    challenger = Detector(RulesConfig.model_validate(CANDIDATE), model)
    detector = Detector(RulesConfig(), model, shadow=challenger)
    batch = decisions_of(world["lines"], detector)
    states: dict[str, CustomerState] = {}
    shadows: dict[str, CustomerState] = {}
    streamed = []
    for line in world["lines"]:
        txn = parse_transaction(line).transaction  # type: ignore[union-attr]
        got = detector.process(
            states.setdefault(txn.customer_id, CustomerState()),
            txn,
            shadow_state=shadows.setdefault(txn.customer_id, CustomerState()),
        )
        if got.decision is not None:
            streamed.append(orjson.loads(msgspec.json.encode(got.decision)))
    assert streamed == batch


def test_a_shadow_of_a_shadow_is_refused() -> None:
    inner = Detector(RulesConfig(), None, shadow=Detector(RulesConfig(), None))
    with pytest.raises(ValueError, match="shadow of its own"):
        Detector(RulesConfig(), None, shadow=inner)


def test_backtest_writes_what_changed_and_both_sides_counts(world: dict[str, Any]) -> None:
    root = world["root"]
    args = ["backtest", "--input", str(root / "tx.jsonl"), "--candidate-rules",
            str(root / "cand.yaml"), "--labels", str(root / "labels.jsonl"),
            "--output", str(root / "changes.jsonl"), "--summary", str(root / "summary.json"),
            "--report-dir", str(root / "report")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model()
    base = decisions_of(world["lines"], Detector(RulesConfig(), model))
    cand = decisions_of(world["lines"], Detector(RulesConfig.model_validate(CANDIDATE), model))
    changed = {
        b["transaction_id"]
        for b, c in zip(base, cand, strict=True)
        if (b["action"], b["is_alert"]) != (c["action"], c["is_alert"])
    }
    changes = [orjson.loads(x) for x in (root / "changes.jsonl").read_bytes().splitlines()]
    assert {c["transaction_id"] for c in changes} == changed
    assert changed
    for change in changes:
        assert set(change) == {"transaction_id", "customer_id", "event_time", "baseline",
                               "candidate"}  # fmt: skip
        assert change["candidate"]["rules_version"].startswith("cand+")
    summary = json.loads((root / "summary.json").read_text())
    assert summary["changed"] == len(changed)
    for side, decisions in (("baseline", base), ("candidate", cand)):
        alerts = [d for d in decisions if d["is_alert"]]
        assert summary[side]["alerts"] == len(alerts)
        assert summary[side]["alerts_by_action"] == {
            a: sum(d["action"] == a for d in alerts) for a in ("review", "block")
        }
        assert summary[side]["alerts_by_rule"].get("FR-002", 0) == sum(
            any(r["code"] == "FR-002" for r in d["reasons"]) for d in alerts
        )
        for key in ("precision", "recall", "average_precision"):
            assert 0 <= summary[side][key] <= 1
    assert summary["dead_letters"] == 1  # the conflicting copy, once for both sides
    assert (root / "report" / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "candidate" in result.output and "FR-002" in result.output


def test_backtest_needs_a_candidate_and_never_writes_over_its_input(tmp_path: Path) -> None:
    events = tmp_path / "tx.jsonl"
    events.write_bytes(b"")
    nothing = runner.invoke(app, ["backtest", "-i", str(events), "-o", str(tmp_path / "c.jsonl")])
    assert nothing.exit_code == 2
    assert "nothing to try" in nothing.output
    rules = tmp_path / "cand.yaml"
    rules.write_text("version: c\n")
    clash = runner.invoke(
        app, ["backtest", "-i", str(events), "--candidate-rules", str(rules), "-o", str(events)]
    )
    assert clash.exit_code == 2
    assert events.read_bytes() == b""


def test_an_identical_candidate_changes_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    same = tmp_path / "same.yaml"
    same.write_text(RulesConfig().to_yaml())
    out = tmp_path / "changes.jsonl"
    result = runner.invoke(app, ["backtest", "-i", str(world["root"] / "tx.jsonl"),
                                 "--candidate-rules", str(same), "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b""


def test_a_decision_without_shadow_has_no_shadow_field() -> None:
    txn = parse_transaction(
        b'{"transaction_id":"t","customer_id":"c","store_id":"s","amount":1,'
        b'"timestamp":"2026-01-05T10:00:00Z"}'
    ).transaction  # type: ignore[union-attr]
    decision = FraudDecision("t", "c", "s", "1.00", txn.timestamp, 0.0, 0.0, None, False,
                             "allow", [], "1", None)  # fmt: skip
    line = orjson.loads(msgspec.json.encode(decision))
    assert "shadow" not in line
