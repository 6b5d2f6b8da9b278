"""The warehouse migrations against a real PostgreSQL: applied once, in order, atomically."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pytest

from streamflow_jobs.events import (
    FraudAlert,
    ParseFailure,
    Reason,
    SourceRef,
    dead_letter_for,
    parse_transaction,
)
from streamflow_jobs.migrate import DEFAULT_DIR, MigrationError, discover, main, migrate

pytestmark = pytest.mark.integration

TXN = (
    b'{"transaction_id":"t-1","customer_id":"C1","store_id":"S01","amount":"10.50",'
    b'"currency":"BRL","latitude":-23.5,"longitude":-46.6,'
    b'"timestamp":"2026-01-05T10:00:00-03:00","schema_version":2}'
)


def run_main(monkeypatch: pytest.MonkeyPatch, url: str | None, *args: str) -> int:
    if url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    return main(["--database-url-env", "DATABASE_URL", *args])


def ledger(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, name FROM public.streamflow_migrations ORDER BY version"
        ).fetchall()


def test_applies_every_migration_once_then_is_up_to_date(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = discover()
    assert shipped and shipped[0].file == "0001_medallion_bronze.sql"
    assert run_main(monkeypatch, database_url) == 0
    names = ", ".join(m.file for m in shipped)
    assert f"applied {len(shipped)} migration(s): {names}" in capsys.readouterr().out
    assert ledger(database_url) == [(m.version, m.name) for m in shipped]
    with psycopg.connect(database_url) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'bronze'"
            ).fetchall()
        }
    assert {"bronze", "silver", "gold"} <= schemas
    assert {"transactions", "fraud_alerts", "dead_letters"} <= tables
    assert run_main(monkeypatch, database_url) == 0
    assert "up to date" in capsys.readouterr().out
    assert ledger(database_url) == [(m.version, m.name) for m in shipped]


def test_an_edited_applied_migration_is_refused(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE public.first (id int);")
    assert run_main(monkeypatch, database_url, "--migrations", str(tmp_path)) == 0
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE public.first (id bigint);")
    assert run_main(monkeypatch, database_url, "--migrations", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "0001_first.sql was applied with a different content" in err
    assert "Traceback" not in err


def test_a_failing_migration_is_rolled_back_whole(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE public.ok (id int);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE public.half (id int);\nINSERT INTO public.half VALUES (1 / 0);"
    )
    assert run_main(monkeypatch, database_url, "--migrations", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "0002_broken.sql failed and was rolled back: DivisionByZero" in err
    assert ledger(database_url) == [(1, "ok")]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.half')").fetchone() == (None,)
    # Fixed, the next run carries on from the failed file.
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE public.half (id int);")
    assert run_main(monkeypatch, database_url, "--migrations", str(tmp_path)) == 0
    assert ledger(database_url) == [(1, "ok"), (2, "broken")]


def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    migrations = discover()
    results: list[list[str] | Exception] = []

    def run() -> None:
        try:
            results.append([m.file for m in migrate(database_url, migrations)])
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(f for r in results if isinstance(r, list) for f in r) == [
        m.file for m in migrations
    ]


def test_a_database_ahead_of_the_code_is_refused(database_url: str, tmp_path: Path) -> None:
    for name in ("0001_a.sql", "0002_b.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    migrate(database_url, discover(tmp_path))
    (tmp_path / "0002_b.sql").unlink()
    with pytest.raises(MigrationError, match=r"does not know: \[2\]"):
        migrate(database_url, discover(tmp_path))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["1_short.sql"], "not a migration name"),
        (["0001_Upper.sql"], "not a migration name"),
        (["0001_a.sql", "0001_b.sql"], "version 1 also used by 0001_a.sql"),
    ],
)
def test_bad_migration_sets_are_refused(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        discover(tmp_path)


def test_connection_problems_are_one_line_and_keep_the_password_secret(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, None) == 1
    assert "environment variable DATABASE_URL is not set" in capsys.readouterr().err
    wrong = postgres_server.replace("streamflow:", "streamflow:not-the-password-", 1)
    assert run_main(monkeypatch, wrong) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to the database:") and err.count("\n") == 1
    assert "password authentication failed" in err
    assert "not-the-password" not in err and postgres_server.split(":")[2] not in err
    assert run_main(monkeypatch, "host=x password=hunter2 broken") == 1
    err = capsys.readouterr().err
    assert "not a valid libpq URL or DSN" in err and "hunter2" not in err


def test_the_event_contracts_fit_bronze(database_url: str) -> None:
    """What the jobs will write: a transaction, an alert and a dead letter, each idempotent by
    its Kafka coordinates (a redelivered record is the same row)."""
    assert migrate(database_url, discover(DEFAULT_DIR))
    txn = parse_transaction(TXN).transaction  # type: ignore[union-attr]
    alert = FraudAlert(
        transaction_id=txn.transaction_id,
        customer_id=txn.customer_id,
        store_id=txn.store_id,
        amount=txn.amount,
        event_time=txn.timestamp,
        score=0.91,
        rules_score=0.8,
        ml_score=0.95,
        is_alert=True,
        action="review",
        reasons=[Reason("FR-001", "high_value", 4.2, 3.0, 0.6, "amount 4.2x the mean")],
        rules_version="1",
        model_version="iforest-test",
    )
    source = SourceRef(kind="kafka", topic="transactions", partition=2, offset=41)
    dead = dead_letter_for(
        ParseFailure("invalid_json", "not valid JSON"), b"{oops", source, datetime.now(UTC)
    )
    with psycopg.connect(database_url) as conn:
        for _ in range(2):  # the second time is a redelivery
            conn.execute(
                "INSERT INTO bronze.transactions (kafka_topic, kafka_partition, kafka_offset,"
                " transaction_id, customer_id, store_id, product_id, amount, currency,"
                " payment_method, latitude, longitude, event_time, schema_version, payload)"
                " VALUES ('transactions', 0, 7, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    txn.transaction_id,
                    txn.customer_id,
                    txn.store_id,
                    txn.product_id,
                    txn.amount,
                    txn.currency,
                    txn.payment_method,
                    txn.latitude,
                    txn.longitude,
                    txn.timestamp,
                    txn.schema_version,
                    TXN.decode(),
                ),
            )
            conn.execute(
                "INSERT INTO bronze.fraud_alerts (kafka_topic, kafka_partition, kafka_offset,"
                " transaction_id, customer_id, store_id, amount, event_time, score, rules_score,"
                " ml_score, reasons, rules_version, model_version)"
                " VALUES ('alerts', 0, 3, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    alert.transaction_id,
                    alert.customer_id,
                    alert.store_id,
                    alert.amount,
                    alert.event_time,
                    alert.score,
                    alert.rules_score,
                    alert.ml_score,
                    msgspec.json.encode(alert.reasons).decode(),
                    alert.rules_version,
                    alert.model_version,
                ),
            )
            conn.execute(
                "INSERT INTO bronze.dead_letters (error_type, error_message, stage, source,"
                " payload, payload_bytes, payload_truncated, failed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    dead.error_type,
                    dead.error_message,
                    dead.stage,
                    msgspec.json.encode(dead.source).decode(),
                    dead.payload,
                    dead.payload_bytes,
                    dead.payload_truncated,
                    dead.failed_at,
                ),
            )
        counts = [
            conn.execute(f"SELECT count(*) FROM bronze.{t}").fetchone()
            for t in ("transactions", "fraud_alerts", "dead_letters")
        ]
        assert counts == [(1,), (1,), (1,)]
        row = conn.execute(
            "SELECT d.kafka_topic, d.kafka_partition, d.kafka_offset, a.reasons->0->>'code'"
            " FROM bronze.dead_letters d, bronze.fraud_alerts a"
        ).fetchone()
        assert row == ("transactions", 2, 41, "FR-001")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO bronze.transactions (kafka_topic, kafka_partition, kafka_offset,"
                " transaction_id, customer_id, store_id, amount, currency, event_time,"
                " schema_version, payload) VALUES ('transactions', 0, 8, 't', 'c', 's', -1,"
                " 'BRL', now(), 2, '{}')"
            )


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """The migrations Job runs from the installed package: sql/ must be inside the wheel."""
    root = Path(__file__).resolve().parents[2]
    uv = shutil.which("uv")
    assert uv, "uv is installed by make setup"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"streamflow_jobs/sql/migrations/{m.file}" for m in discover()} <= names


def test_the_operators_migrations_job_command_migrates_a_real_database(
    database_url: str, tmp_path: Path
) -> None:
    """The exact command of the Job the operator renders for the sample FraudPipeline, with the
    environment it gets (DATABASE_URL from CNPG's app secret): no shell, no pg_isready."""
    import yaml  # noqa: PLC0415

    from streamflow_operator.reconcile import render_offline  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    sample = (root / "config/samples/fraudpipeline.yaml").read_text()
    (job,) = [c for c in yaml.safe_load_all(render_offline(sample)) if c and c["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in container["env"]] == ["DATABASE_URL"]
    # The image's `python` is the one with streamflow installed: here, this environment's.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "DATABASE_URL": database_url}
    done = subprocess.run(
        container["command"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"applied {len(discover())} migration(s)" in done.stdout
    assert ledger(database_url) == [(m.version, m.name) for m in discover()]


def test_waits_for_a_database_that_appears_later(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Job can start before CNPG has created the database: --wait retries until it is."""
    name = f"late_{uuid.uuid4().hex[:8]}"
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setattr("streamflow_jobs.migrate.RETRY_SECONDS", 0.2)

    def create_later() -> None:
        time.sleep(1.0)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    creator = threading.Thread(target=create_later)
    creator.start()
    try:
        assert run_main(monkeypatch, url, "--wait", "30") == 0
    finally:
        creator.join()
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    err = capsys.readouterr().err
    assert (
        "waiting for the database: connection failed" in err and f'"{name}" does not exist' in err
    )


def test_gives_up_after_the_wait(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/never_created"
    monkeypatch.setattr("streamflow_jobs.migrate.RETRY_SECONDS", 0.2)
    started = time.monotonic()
    assert run_main(monkeypatch, url, "--wait", "1") == 1
    assert 1.0 <= time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert err.count("waiting for the database") >= 2
    assert err.splitlines()[-1].startswith("error: cannot connect to the database:")
