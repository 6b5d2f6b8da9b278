"""Each DAG runs with dag.test() against the real PostgreSQL over seeded bronze data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from streamflow_jobs.migrate import discover, migrate
from streamflow_jobs.warehouse.build import build
from streamflow_jobs.warehouse.feedback import import_feedback
from tests import airflow_env  # before anything imports airflow
from tests.integration.bronze import Bronze, World, make_world
from tests.integration.gold import expected, gold, rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    airflow_env.metadata_db()
    return airflow_env.dagbag()


@pytest.fixture(scope="module")
def world() -> World:
    # ~22 days of history for 60 customers: enough for a training window and a holdout.
    return make_world(4000, seed=23, customers=60)


@pytest.fixture
def warehouse(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database that the DAGs reach as the connection streamflow_postgres."""
    migrate(database_url, discover())
    monkeypatch.setenv("AIRFLOW_CONN_STREAMFLOW_POSTGRES", database_url)
    return database_url


def run(dag: Any, **conf: Any) -> dict[str, str]:
    """dag.test(); the states of its tasks by id. Retries are off (dag.test() would wait out the
    backoff), and the deadline is cleared: Airflow 3.3's dag.test() crashes on a successful run
    of a DAG with a deadline (apache/airflow#73428)."""
    dag.deadline = None
    for t in dag.tasks:
        t.retries = 0
    dr = dag.test(run_conf=conf or None)
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_warehouse_dag_builds_gold_and_its_gate_stops_a_bad_row(
    dags: dict[str, Any], warehouse: str, world: World
) -> None:
    bronze = Bronze(warehouse)
    events = world.events[:1500]
    ids = {e.txn.transaction_id for e in events}
    alerts = {a.transaction_id: a for a in world.alerts if a.transaction_id in ids}
    bronze.write(bronze.transaction_rows(events), bronze.alert_rows(alerts.values()))
    states = run(dags["warehouse"])
    assert set(states.values()) == {"success"}, states
    assert gold(warehouse) == expected(events, alerts)
    checks = rows(warehouse, "SELECT DISTINCT check_name FROM silver.quality_results")
    assert ("gold_totals_reconcile",) in checks

    bad = bronze.transaction_rows([world.events[1600]])
    bad[0] = (*bad[0][:8], "brl", *bad[0][9:])
    bronze.write(bad)
    states = run(dags["warehouse"])
    assert states["silver.transactions_model_build"] == "failed"
    assert states["gold.fact_transactions_model_build"] == "upstream_failed"
    assert states["quality_gate"] == "upstream_failed"
    assert gold(warehouse) == expected(events, alerts)  # the gate held
    assert rows(
        warehouse,
        "SELECT status FROM silver.quality_results"
        " WHERE check_name = 'silver_transactions_currency_is_iso4217'"
        " ORDER BY checked_at DESC LIMIT 1",
    ) == [("fail",)]


def test_maintenance_dag_prunes_only_what_silver_has_loaded(
    dags: dict[str, Any], warehouse: str, world: World
) -> None:
    bronze = Bronze(warehouse)
    old = datetime.now(UTC) - timedelta(days=10)
    bronze.write(bronze.transaction_rows(world.events[:300], old))
    assert build(warehouse).ok
    # Stamped as long ago but not in silver (a writer's transaction that committed after the
    # build, later than dbt's look-back): kept, and the completeness check names it.
    bronze.write(bronze.transaction_rows(world.events[300:400], old))
    bronze.write(bronze.transaction_rows(world.events[400:500]))  # recent
    states = run(dags["maintenance"])
    assert set(states.values()) == {"success"}, states
    kept = {r[0] for r in rows(warehouse, "SELECT transaction_id FROM bronze.transactions")}
    assert kept == {e.txn.transaction_id for e in world.events[300:500]}
    assert rows(warehouse, "SELECT count(*) FROM silver.transactions") == [(300,)]


def dead_letter(conn: psycopg.Connection[Any], payload: bytes, error: str, offset: int) -> None:
    conn.execute(
        "INSERT INTO bronze.dead_letters (error_type, error_message, stage, source, payload,"
        " payload_bytes, payload_truncated, failed_at) VALUES (%s, 'x', 'sink', %s, %s, %s,"
        " false, now())",
        (
            error,
            orjson.dumps(
                {"kind": "kafka", "topic": "transactions", "partition": 0, "offset": offset}
            ).decode(),
            payload.decode(),
            len(payload),
        ),
    )


def test_dead_letters_dag_counts_and_alerts_over_the_threshold(
    dags: dict[str, Any], warehouse: str, world: World
) -> None:
    with psycopg.connect(warehouse) as conn:
        for i in range(3):
            dead_letter(conn, b"{not json", "invalid_json", i)
        dead_letter(conn, world.events[0].raw, "sink_unavailable", 3)
    quiet = run(dags["dead_letters"], threshold=5, redrive=False)
    assert quiet == {"count": "success", "alert": "success", "redrive": "skipped"}
    loud = run(dags["dead_letters"], threshold=2, redrive=False)
    assert loud["alert"] == "failed"


def test_model_training_dag_registers_a_candidate_with_its_backtest(
    dags: dict[str, Any], warehouse: str, world: World, tmp_path: Path
) -> None:
    bronze = Bronze(warehouse)
    bronze.write(bronze.transaction_rows(world.events), bronze.alert_rows(world.alerts))
    # Verdicts as production has them: the confirmed fraud and a few cleared alerts; every
    # other transaction carries none (and counts as legitimate for training).
    labels = tmp_path / "labels.jsonl"
    confirmed = [e.label for e in world.events if e.label["is_fraud"]]
    confirmed += [e.label for e in world.events if not e.label["is_fraud"]][:25]
    labels.write_bytes(b"".join(orjson.dumps(label) + b"\n" for label in confirmed))
    import_feedback(warehouse, labels)
    assert build(warehouse).ok
    states = run(
        dags["model_training"],
        days=30,
        holdout_days=7,
        tolerance=1.0,  # accept any candidate: this test is about the path, not the model
        workdir=str(tmp_path / "training"),
    )
    assert set(states.values()) == {"success"}, states
    ((version, checksum, artifact, metrics, baseline),) = rows(
        warehouse,
        "SELECT model_version, checksum, artifact, metrics, baseline_metrics"
        " FROM ml.model_candidates",
    )
    assert artifact["model_version"] == version and artifact["checksum"] == checksum
    # The shipped default's kind, trained on every exported transaction before the holdout.
    assert artifact["format"] == "streamflow.gradient-boosting"
    assert artifact["training"]["unlabelled_rows"] == 0
    assert 0 < artifact["training"]["fraud_rows"] < artifact["training"]["rows"]
    assert metrics["fraud"] == baseline["fraud"] > 0
    assert 0 <= metrics["average_precision"] <= 1
    assert metrics["alerts"] >= 0 and "config" not in metrics  # one backtest pass, both sides
