"""`streamflow replay` (a fixed interface): each non-empty line is a decision or a dead letter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streamflow_jobs.cli import app
from streamflow_jobs.detector import Detector
from streamflow_jobs.events import DEAD_LETTER_PAYLOAD_LIMIT, FraudDecision, parse_transaction
from streamflow_jobs.model.forest import ForestScorer
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState

pytestmark = pytest.mark.unit
runner = CliRunner()

GOOD = (
    b'{"transaction_id":"ok-%d","customer_id":"C1","store_id":"S01","amount":10.5,'
    b'"timestamp":"2026-01-05T10:%02d:00-03:00","schema_version":2}'
)
BAD_LINES = [
    b"{not json",
    b"[1,2,3]",
    b"42",
    b'{"transaction_id":"x","customer_id":"C1","store_id":"S01","amount":"ten",'
    b'"timestamp":"2026-01-05T10:00:00-03:00"}',
    b'{"transaction_id":"x","customer_id":"C1","store_id":"S01","amount":NaN,'
    b'"timestamp":"2026-01-05T10:00:00-03:00"}',
    b'{"transaction_id":"x","customer_id":"C1","store_id":"S01","amount":5,'
    b'"timestamp":"2026-01-05T10:00:00"}',
    b'{"transaction_id":"x","customer_id":"C1","store_id":"S01","amount":5,"latitude":91,'
    b'"timestamp":"2026-01-05T10:00:00-03:00"}',
    b"\xff\xfe\x00garbage",
    b'{"transaction_id":"' + b"A" * 3_000_000 + b'"}',  # a 3 MB line
]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["replay", *args])
    return result.exit_code, result.output


def test_every_line_is_accounted_for(tmp_path: Path) -> None:
    lines = [GOOD % (i, i) for i in range(20)] + BAD_LINES
    lines.insert(5, b"")
    lines.insert(9, b"   ")
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    code, output = run("--input", str(src), "--output", str(out), "--dlq", str(dlq))
    assert code == 0, output
    decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    dead = [orjson.loads(x) for x in dlq.read_bytes().splitlines()]
    assert len(decisions) == 20 and len(dead) == len(BAD_LINES)
    assert [d["transaction_id"] for d in decisions] == [f"ok-{i}" for i in range(20)]
    for d in decisions:
        FraudDecision(**{**d, "reasons": []})  # the decision contract's fields, all present
        assert 0 <= d["score"] <= 1 and isinstance(d["is_alert"], bool)
    types = [d["error_type"] for d in dead]
    assert types == [
        "invalid_json",
        "not_an_object",
        "not_an_object",
        "validation_error",
        "invalid_json",
        "validation_error",
        "validation_error",
        "invalid_encoding",
        "payload_too_large",
    ]
    assert "latitude" in dead[6]["error_message"]
    huge = dead[-1]
    assert huge["payload_truncated"] and huge["payload_bytes"] == len(BAD_LINES[-1])
    assert len(huge["payload"]) <= DEAD_LETTER_PAYLOAD_LIMIT
    assert all(d["source"]["kind"] == "file" and d["source"]["line"] for d in dead)
    assert "Traceback" not in output


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    code, output = run("--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    assert code != 0 and "input file not found" in output and "Traceback" not in output


def test_bad_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD % (1, 1))
    rules = tmp_path / "rules.yaml"
    rules.write_text("velocity:\n  max_count: -3\n")
    code, output = run("--input", str(src), "--output", str(tmp_path / "o"), "--rules", str(rules))
    assert code == 2 and "max_count" in output


def test_labels_give_quality_metrics(
    small_world: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    events, labels, _ = small_world
    summary = tmp_path / "summary.json"
    code, output = run(
        "--input",
        str(events),
        "--output",
        str(tmp_path / "d.jsonl"),
        "--labels",
        str(labels),
        "--summary",
        str(summary),
    )
    assert code == 0, output
    metrics = orjson.loads(summary.read_bytes())["metrics"]
    for key in ("precision", "recall", "average_precision", "recall_at_1pct_alert_rate"):
        assert 0 <= metrics[key] <= 1
    assert "card_testing" in metrics["per_pattern"]


def test_replay_and_the_streaming_path_decide_the_same(
    small_world: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    """Batch scoring in replay == one event at a time (as the Flink job calls the detector)."""
    events, _, _ = small_world
    out = tmp_path / "d.jsonl"
    assert run("--input", str(events), "--output", str(out))[0] == 0
    detector = Detector(RulesConfig(), ForestScorer.load())
    states: dict[str, CustomerState] = {}
    replayed = out.read_bytes().splitlines()
    for raw, line in zip(events.read_bytes().splitlines(), replayed, strict=True):
        txn = parse_transaction(raw).transaction  # type: ignore[union-attr]
        state = states.setdefault(txn.customer_id, CustomerState())
        one = detector.decide(txn, detector.evaluate(state, txn))
        batch = orjson.loads(line)
        assert batch["transaction_id"] == one.transaction_id
        assert batch["score"] == pytest.approx(one.score, abs=1e-12)
        assert batch["is_alert"] == one.is_alert


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", "replay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--labels" in out.stdout and "--dlq" in out.stdout
