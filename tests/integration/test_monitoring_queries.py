"""The warehouse freshness CloudNativePG's exporter reads (sql/migrations/0005_monitoring.sql,
the operator's custom queries), on a real PostgreSQL and a real dbt build, with the exporter's
own privileges: `SET ROLE pg_monitor` in a read-only transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from streamflow_jobs.migrate import discover, migrate
from streamflow_jobs.warehouse.build import build
from streamflow_operator.reconcile import parse_spec
from streamflow_operator.render import Meta
from streamflow_operator.render.postgres import MONITORING_KEY, build_monitoring_queries
from tests.integration.bronze import Bronze, make_world

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "config/samples/fraudpipeline.yaml"


def exported(url: str) -> dict[str, dict[str, float | None]]:
    """Every custom query the operator renders, run the way CNPG's exporter runs it:
    {query name: {label value: gauge value}}."""
    spec = parse_spec(yaml.safe_load(SAMPLE.read_text())["spec"])
    cm = build_monitoring_queries(spec, Meta("p", "ns"))
    queries = yaml.safe_load(cm["data"][MONITORING_KEY])
    out: dict[str, dict[str, float | None]] = {}
    with psycopg.connect(url) as conn:
        conn.read_only = True
        for name, q in queries.items():
            with conn.transaction():
                conn.execute("SET ROLE TO pg_monitor")
                out[name] = {str(r[0]): r[1] for r in conn.execute(q["query"]).fetchall()}
                conn.execute("RESET ROLE")
    return out


def test_pg_monitor_reads_the_numbers_and_no_table(database_url: str) -> None:
    migrate(database_url, discover())
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE TO pg_monitor")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM bronze.transactions LIMIT 1")


def test_freshness_follows_bronze_silver_and_gold(database_url: str) -> None:
    migrate(database_url, discover())
    assert exported(database_url) == {
        "streamflow_bronze": {"transactions": None},  # nothing arrived yet
        "streamflow_warehouse": {"silver": 0.0, "gold": 0.0},
    }
    world = make_world(300, seed=3, customers=40)
    bronze = Bronze(database_url)
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    bronze.write(bronze.transaction_rows(world.events[:200], ten_minutes_ago))
    got = exported(database_url)
    assert 600 <= got["streamflow_bronze"]["transactions"] < 900  # type: ignore[operator]
    assert 600 <= got["streamflow_warehouse"]["silver"] < 900  # silver was never built
    assert got["streamflow_warehouse"]["gold"] == 0.0  # nothing in silver waits for gold

    report = build(database_url)
    assert report.ok, report.reason()
    assert exported(database_url)["streamflow_warehouse"] == {"silver": 0.0, "gold": 0.0}

    # Newer rows arrive (and one redelivered duplicate, which silver rightly skips).
    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    bronze.write(bronze.transaction_rows(world.events[200:], two_minutes_ago))
    bronze.write(bronze.transaction_rows(world.events[:1]))
    got = exported(database_url)
    assert got["streamflow_bronze"]["transactions"] < 60  # type: ignore[operator]
    assert 120 <= got["streamflow_warehouse"]["silver"] < 400  # type: ignore[operator]

    # silver alone: gold now waits for those rows.
    report = build(database_url, select=["path:models/staging", "path:models/silver"])
    # Silver built; only the check across silver and gold fails while gold lags, as it should.
    assert report.ok or report.reason() == "quality gate failed: gold_totals_reconcile (3 failing)"
    got = exported(database_url)
    assert got["streamflow_warehouse"]["silver"] == 0.0  # the duplicate does not count
    assert 120 <= got["streamflow_warehouse"]["gold"] < 400  # type: ignore[operator]

    report = build(database_url)
    assert report.ok, report.reason()
    assert exported(database_url)["streamflow_warehouse"] == {"silver": 0.0, "gold": 0.0}
