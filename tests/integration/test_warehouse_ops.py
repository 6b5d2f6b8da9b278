"""Feedback import, dead-letter re-drive selection and ledger, and the command line, against
the real PostgreSQL. (The Kafka publish itself is one function, kafka_publisher: its test
against the real broker belongs with the Kafka infrastructure.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import orjson
import psycopg
import pytest

from streamflow_jobs.events import ParseFailure, SourceRef, dead_letter_for
from streamflow_jobs.migrate import discover, migrate
from streamflow_jobs.warehouse import dead_letters as dl
from streamflow_jobs.warehouse.build import build
from streamflow_jobs.warehouse.feedback import import_feedback
from tests.integration.bronze import Bronze, make_world
from tests.integration.gold import rows

pytestmark = pytest.mark.integration


@pytest.fixture
def migrated(database_url: str) -> str:
    migrate(database_url, discover())
    return database_url


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_feedback_import_is_idempotent_and_the_latest_verdict_stands(
    migrated: str, tmp_path: Path
) -> None:
    world = make_world(600, seed=3, customers=30)
    bronze = Bronze(migrated)
    bronze.write(bronze.transaction_rows(world.events))
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b"".join(orjson.dumps(e.label) + b"\n" for e in world.events))
    first = cli("feedback", "import", "--input", str(labels), "--dsn", migrated)
    assert first.returncode == 0, first.stderr
    assert f"{len(world.events)} new, 0 changed, 0 already imported" in first.stderr
    again = cli("feedback", "import", "--input", str(labels), "--dsn", migrated)
    assert f"0 new, 0 changed, {len(world.events)} already imported" in again.stderr
    assert rows(migrated, "SELECT count(*) FROM bronze.feedback") == [(len(world.events),)]
    # An analyst's later report overrules the first verdict (another source, a later time).
    target = world.events[5].txn
    later = tmp_path / "later.jsonl"
    later.write_text(
        json.dumps(
            {
                "transaction_id": target.transaction_id,
                "is_fraud": not world.events[5].label["is_fraud"],
                "source": "analyst",
                "reported_at": "2027-01-01T00:00:00Z",
            }
        )
        + "\n"
    )
    result = import_feedback(migrated, later)
    assert (result.inserted, result.changed, result.unchanged) == (1, 0, 0)
    assert build(migrated).ok
    standing = dict(rows(migrated, "SELECT transaction_id, is_fraud FROM silver.feedback"))
    want = {e.txn.transaction_id: e.label["is_fraud"] for e in world.events}
    want[target.transaction_id] = not world.events[5].label["is_fraud"]
    assert standing == want
    confirmed = dict(
        rows(migrated, "SELECT customer_id, confirmed_fraud FROM gold.customer_features")
    )
    fraud_by_customer: dict[str, int] = {}
    for e in world.events:
        fraud_by_customer.setdefault(e.txn.customer_id, 0)
        fraud_by_customer[e.txn.customer_id] += want[e.txn.transaction_id]
    assert confirmed == fraud_by_customer
    # A bad file imports nothing and says which line is wrong.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"transaction_id": "x", "is_fraud": true}\n{"transaction_id": 3}\n')
    done = cli("feedback", "import", "--input", str(bad), "--dsn", migrated)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {bad}:2: not a verdict")
    assert rows(migrated, "SELECT count(*) FROM bronze.feedback") == [(len(world.events) + 1,)]


def insert_dead_letter(
    url: str, payload: bytes, error: str, offset: int, cut: bool = False
) -> None:
    failure = ParseFailure("validation_error", error)
    source = SourceRef(kind="kafka", topic="transactions", partition=1, offset=offset)
    dead = dead_letter_for(failure, payload, source, datetime.now(UTC))
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO bronze.dead_letters (error_type, error_message, stage, source, payload,"
            " payload_bytes, payload_truncated, failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                error,
                dead.error_message,
                dead.stage,
                msgspec.json.encode(dead.source).decode(),
                dead.payload,
                dead.payload_bytes,
                cut or dead.payload_truncated,
                dead.failed_at,
            ),
        )


def test_dead_letters_whose_cause_was_fixed_are_redriven_once(migrated: str) -> None:
    world = make_world(20, seed=4, customers=5)
    fixed = world.events[0]  # valid today: it failed for a reason that is gone (say, a sink)
    insert_dead_letter(migrated, fixed.raw, "sink_unavailable", 10)
    insert_dead_letter(migrated, b'{"transaction_id": "t", "amount": -1}', "validation_error", 11)
    insert_dead_letter(migrated, world.events[1].raw, "sink_unavailable", 12, cut=True)
    assert dl.counts_by_error_type(migrated) == {"sink_unavailable": 2, "validation_error": 1}

    candidates = dl.redrivable(migrated)
    assert [(c.transaction_id, c.customer_id) for c in candidates] == [
        (fixed.txn.transaction_id, fixed.txn.customer_id)
    ]
    assert dl.redrivable(migrated, ["validation_error"]) == []
    sent: list[tuple[str, bytes]] = []

    def publish(records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        sent.extend(records)
        return [(2, 100 + i) for i in range(len(records))]

    done = dl.redrive(migrated, candidates, "transactions", publish)
    assert (done.candidates, done.published) == (1, 1)
    assert sent == [(fixed.txn.customer_id, fixed.raw)]  # keyed by customer, payload as it was
    assert rows(
        migrated,
        "SELECT transaction_id, status, topic, kafka_partition, kafka_offset"
        " FROM bronze.dead_letter_redrives",
    ) == [(fixed.txn.transaction_id, "published", "transactions", 2, 100)]
    # Once only: the next run finds nothing to re-drive.
    assert dl.redrivable(migrated) == []
    assert dl.redrive(migrated, candidates, "transactions", publish).published == 0
    assert len(sent) == 1


def test_a_crashed_publish_leaves_a_claim_the_next_run_completes(migrated: str) -> None:
    world = make_world(5, seed=6, customers=2)
    insert_dead_letter(migrated, world.events[0].raw, "sink_unavailable", 1)
    candidates = dl.redrivable(migrated)

    def broken(records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        raise RuntimeError("broker unreachable")

    with pytest.raises(RuntimeError, match="broker unreachable"):
        dl.redrive(migrated, candidates, "transactions", broken)
    assert rows(migrated, "SELECT status FROM bronze.dead_letter_redrives") == [("claimed",)]
    again = dl.redrivable(migrated)
    assert [c.dead_letter_id for c in again] == [c.dead_letter_id for c in candidates]
    done = dl.redrive(migrated, again, "transactions", lambda r: [(0, 7)] * len(r))
    assert done.published == 1
    assert rows(migrated, "SELECT status FROM bronze.dead_letter_redrives") == [("published",)]


def test_build_without_dsn_uses_the_local_infra_database(database_url: str, tmp_path: Path) -> None:
    missing = cli("warehouse", "build", env={"STREAMFLOW_INFRA_DIR": str(tmp_path)})
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: no local database: run `streamflow infra up` or pass --dsn"
    )
    (tmp_path / "state.json").write_text(
        json.dumps({"postgres": {"dsn": database_url}, "kafka": {"bootstrap": "127.0.0.1:1"}})
    )
    done = cli(
        "warehouse",
        "build",
        "--summary",
        str(tmp_path / "s.json"),
        env={"STREAMFLOW_INFRA_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] and summary["applied_migrations"] == [m.file for m in discover()]
    assert summary["models"] == 18 and summary["checks"]["fail"] == 0
    # A database that is not there: one line, no password, no traceback.
    wrong = database_url.rsplit("/", 1)[0] + "/does_not_exist"
    gone = cli("warehouse", "build", "--dsn", wrong)
    assert gone.returncode == 2
    assert gone.stderr.startswith("error: cannot connect to the database:")
    assert gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr
    assert database_url.split(":")[2].split("@", maxsplit=1)[0] not in gone.stderr
