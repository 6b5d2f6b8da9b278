"""`streamflow replay` (a fixed interface): each non-empty line is a decision or a dead letter."""

from __future__ import annotations

import io
import subprocess
import sys
from itertools import chain
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streamflow_jobs.cli import app
from streamflow_jobs.detector import Detector
from streamflow_jobs.events import (
    DEAD_LETTER_PAYLOAD_LIMIT,
    MAX_EVENT_BYTES,
    FraudDecision,
    parse_transaction,
)
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.replay import READ_BLOCK, Skimmed, read_lines, replay
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import DEDUP_MEMORY, CustomerState

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


HOSTILE_LINES = [
    b'{"transaction_id":"ok-1","customer_id":"C1","store_id":"S01","amount":1,'
    b'"timestamp":"2026-01-05T10:01:00-03:00","amount":99999}',  # a repeated key
    b'{"transaction_id":"far","customer_id":"C1","store_id":"S01","amount":5,'
    b'"timestamp":"2099-01-01T00:00:00Z"}',  # the far future
    b'{"transaction_id":"old","customer_id":"C1","store_id":"S01","amount":5,'
    b'"timestamp":"1971-01-01T00:00:00Z"}',  # the far past
    b"\xef\xbb\xbf" + GOOD % (7, 7),  # a byte order mark inside the file is not JSON
    b'{"transaction_id": "\xff", "customer_id":"C1"}',  # stray bytes inside a string
    b'{"transaction_id":"x\xc3","customer_id":"C1","store_id":"S01","amount":1,'
    b'"timestamp":"2026-01-05T10:01:00Z","schema_version":1}',  # the same, schema v1
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
    assert code != 0 and "file not found" in output and "Traceback" not in output


def test_bad_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD % (1, 1))
    rules = tmp_path / "rules.yaml"
    rules.write_text("velocity:\n  max_count: -3\n")
    code, output = run("--input", str(src), "--output", str(tmp_path / "o"), "--rules", str(rules))
    assert code == 2 and "max_count" in output
    rules.write_text("velocity: [1\n")
    code, output = run("--input", str(src), "--output", str(tmp_path / "o"), "--rules", str(rules))
    assert code == 2 and "not YAML" in " ".join(output.split()) and "Traceback" not in output


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    """Through the console script's entry point, as users run it."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD % (1, 1))
    missing = tmp_path / "no-such-dir" / "out.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow_jobs.cli",
            "replay",
            "--input",
            str(src),
            "--output",
            str(missing),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    said = (done.stdout + done.stderr).replace("\n", "")  # rich wraps long lines
    assert done.returncode == 2
    assert "No such file or directory" in said and str(missing) in said
    assert "Traceback" not in said


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
    """Batch scoring in replay == one event at a time (as the Flink job calls the detector):
    the same rules, the same forest walk (any row count), the same blend arithmetic."""
    events, _, _ = small_world
    out = tmp_path / "d.jsonl"
    assert run("--input", str(events), "--output", str(out))[0] == 0
    detector = Detector(RulesConfig(), load_model())
    states: dict[str, CustomerState] = {}
    replayed = out.read_bytes().splitlines()
    for raw, line in zip(events.read_bytes().splitlines(), replayed, strict=True):
        txn = parse_transaction(raw).transaction  # type: ignore[union-attr]
        state = states.setdefault(txn.customer_id, CustomerState())
        one = detector.decide(txn, detector.evaluate(state, txn))
        assert orjson.loads(line) == orjson.loads(msgspec.json.encode(one))  # bit for bit


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", "replay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--labels" in out.stdout and "--dlq" in out.stdout


def reference_lines(data: bytes, max_line: int, keep: int) -> list[tuple[bytes, int]]:
    """What read_lines must yield, from splitting the whole input at once: (line, true size)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    stripped = [x.removesuffix(b"\r") for x in lines]
    return [(x[:keep] if len(x) > max_line else x, len(x)) for x in stripped]


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from([b"\n", b"\r\n", b"\r", b"{}", b" "]),
            st.integers(30, 34).map(lambda n: b"x" * n),  # around the limit of 32
            st.just(b"y" * 100),
        ),
        max_size=12,
    ),
    block_size=st.sampled_from([1, 2, 7, 32, 33, 1000]),
)
def test_read_lines_splits_exactly_and_skims_long_lines(
    pieces: list[bytes], block_size: int
) -> None:
    data = b"".join(pieces)
    batches = list(read_lines(io.BytesIO(data), block_size, max_line=32, keep=8))
    got = [(bytes(x), x.size if isinstance(x, Skimmed) else len(x)) for b in batches for x in b]
    assert got == reference_lines(data, max_line=32, keep=8)
    assert all(len(x) <= 32 for b in batches for x in b)  # never a whole long line


def test_read_lines_defaults_skim_at_the_event_limit() -> None:
    data = b"a" * (MAX_EVENT_BYTES + 1) + b"\r\n" + b"b" * MAX_EVENT_BYTES + b"\n"
    first, second = chain.from_iterable(read_lines(io.BytesIO(data), READ_BLOCK // 16))
    assert isinstance(first, Skimmed) and first.size == MAX_EVENT_BYTES + 1
    assert len(first) == DEAD_LETTER_PAYLOAD_LIMIT
    assert second == b"b" * MAX_EVENT_BYTES and not isinstance(second, Skimmed)


_SHARED_DETECTOR: list[Detector] = []


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.integers(0, 59).map(lambda i: GOOD % (i, i)),
            # the same ids with other content: conflicting duplicates
            st.tuples(st.integers(0, 59), st.integers(0, 59)).map(lambda p: GOOD % p),
            st.sampled_from(HOSTILE_LINES),
            st.sampled_from(BAD_LINES[:-1]),
            st.sampled_from([b"", b" ", b"\t", b"\r", b"\x0b", b"\x00", b"{}", b"null"]),
            st.binary(max_size=30),
            st.just(b"x" * (MAX_EVENT_BYTES + 1)),
        ),
        max_size=25,
    ),
    crlf=st.booleans(),
)
def test_every_non_blank_line_is_one_decision_or_one_dead_letter(
    lines: list[bytes], crlf: bool
) -> None:
    """Whatever the bytes (stray newlines inside generated binary split lines too), the replay
    accounts for every line: decisions + dead letters = non-blank lines, in order."""
    if not _SHARED_DETECTOR:
        _SHARED_DETECTOR.append(Detector(RulesConfig(), load_model()))
    data = (b"\r\n" if crlf else b"\n").join(lines)
    expected = reference_lines(data, MAX_EVENT_BYTES, DEAD_LETTER_PAYLOAD_LIMIT)
    non_blank = [i for i, (x, size) in enumerate(expected, 1) if size != len(x) or x.strip()]
    out, dead = io.BytesIO(), io.BytesIO()
    summary = replay(io.BytesIO(data), out, dead, _SHARED_DETECTOR[0], source_name="in.jsonl")
    decisions = out.getvalue().splitlines()
    dead_letters = [orjson.loads(x) for x in dead.getvalue().splitlines()]
    assert summary.lines == len(expected)
    assert (
        len(decisions) + len(dead_letters) == len(non_blank) == summary.lines - summary.blank_lines
    )
    assert [d["source"]["line"] for d in dead_letters] == sorted(
        {d["source"]["line"] for d in dead_letters}
    )
    assert {d["source"]["line"] for d in dead_letters} <= set(non_blank)
    # A transaction id seen again within the customer's last DEDUP_MEMORY transactions got
    # the same decision (and counts as a duplicate); its conflicting copies are dead letters
    # that say so. (Every valid line here is customer C1's.)
    remembered: dict[str, bytes] = {}  # insertion order: oldest first
    repeats = 0
    for line in decisions:
        tid = orjson.loads(line)["transaction_id"]
        if tid in remembered:
            assert remembered[tid] == line
            repeats += 1
            continue
        remembered[tid] = line
        if len(remembered) > DEDUP_MEMORY:
            del remembered[next(iter(remembered))]
    assert summary.duplicates == repeats
    for d in dead_letters:
        if d["error_type"] == "conflicting_duplicate":
            assert d["stage"] == "detect" and "first copy" in d["error_message"]
