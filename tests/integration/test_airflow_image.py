"""The Airflow image (`make images`) runs the warehouse DAG (migrations, dbt staging -> silver ->
gold, the quality gate) against the session's PostgreSQL: gold comes out as the events say."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streamflow_jobs.migrate import discover, migrate
from tests.images.containers import PODMAN, ROOT, image
from tests.integration.bronze import Bronze, make_world
from tests.integration.gold import expected, gold

pytestmark = pytest.mark.integration
RUNNER = ROOT / "tests" / "images" / "run_dag.py"


def test_the_airflow_image_builds_gold_with_the_warehouse_dag(database_url: str) -> None:
    ref = image("airflow")
    migrate(database_url, discover())  # bronze's tables, to seed them
    world = make_world(600, seed=31, customers=30)
    bronze = Bronze(database_url)
    ids = {e.txn.transaction_id for e in world.events}
    alerts = {a.transaction_id: a for a in world.alerts if a.transaction_id in ids}
    bronze.write(bronze.transaction_rows(world.events), bronze.alert_rows(alerts.values()))
    done = subprocess.run(
        [
            str(PODMAN),
            "run",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777",
            "-v",
            f"{RUNNER}:/opt/streamflow-test/run_dag.py:ro",
            "-e",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:////tmp/airflow/airflow.db",
            "-e",
            "AIRFLOW__CORE__UNIT_TEST_MODE=True",
            "-e",
            f"AIRFLOW_CONN_STREAMFLOW_POSTGRES={database_url}",
            ref,
            "sh",
            "-c",
            "mkdir -p /tmp/airflow && exec python3 /opt/streamflow-test/run_dag.py warehouse",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, output
    states = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(states.values()) == {"success"}, states
    assert "quality_gate" in states and "gold.fact_transactions_model_build" in states
    assert gold(database_url) == expected(world.events, alerts)


def test_the_image_refuses_to_start_without_its_compiled_hot_path(tmp_path: Path) -> None:
    """A stale or missing compiled module stops the container with one line, before Airflow."""
    ref = image("airflow")
    done = subprocess.run(
        [
            # As root: only to break the install.
            str(PODMAN),
            "run",
            "--rm",
            "--user",
            "0",
            "--entrypoint",
            "sh",
            ref,
            "-c",
            "rm /usr/local/lib/python3.11/dist-packages/streamflow_jobs/state.cpython-311-*.so"
            " && exec /usr/local/bin/streamflow-entrypoint airflow version",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip().splitlines() == [
        "streamflow: refusing to start: ImportError: STREAMFLOW_REQUIRE_COMPILED=1 but "
        "streamflow_jobs/state.py has no compiled module: this install would run the "
        "interpreted path (build the wheel after `make compile`: `make wheel`)"
    ]
