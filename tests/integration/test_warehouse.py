"""The warehouse against a real PostgreSQL: migrations + dbt from an empty database and again on
a full one; silver and gold checked against values computed here, in Python, from the events
and the detector's decisions (not by the same SQL); idempotence, late events, late alerts, and
the quality gate."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from streamflow_jobs.events import FraudDecision, ParsedTransaction, parse_transaction
from streamflow_jobs.migrate import discover, migrate
from streamflow_jobs.warehouse.build import BuildReport, build
from tests.integration.bronze import Bronze, Event, World, make_world
from tests.integration.gold import expected, gold, rows

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(3000, seed=11, customers=120)


@pytest.fixture
def migrated(database_url: str) -> str:
    """A fresh database with bronze (what the operator's migrations Job leaves)."""
    migrate(database_url, discover())
    return database_url


def built(url: str) -> BuildReport:
    report = build(url)
    assert report.ok, report.reason()
    return report


def alerts_of(world: World) -> dict[str, FraudDecision]:
    return {a.transaction_id: a for a in world.alerts}


def test_gold_interface_columns_and_types(database_url: str) -> None:
    """The three interface tables have exactly the documented columns, times in timestamptz."""
    built(database_url)
    columns = rows(
        database_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'gold' AND table_name IN"
        " ('fact_transactions', 'agg_hourly_sales', 'agg_daily_fraud')"
        " ORDER BY table_name, ordinal_position",
    )
    by_table: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for table, column, kind in columns:
        by_table[table].append((column, kind))
    assert by_table == {
        "fact_transactions": [
            ("transaction_id", "text"),
            ("customer_id", "text"),
            ("store_id", "text"),
            ("amount", "numeric"),
            ("event_time", "timestamp with time zone"),
            ("is_alert", "boolean"),
            ("score", "double precision"),
        ],
        "agg_hourly_sales": [
            ("store_id", "text"),
            ("hour_start", "timestamp with time zone"),
            ("transactions", "bigint"),
            ("amount_total", "numeric"),
            ("amount_avg", "numeric"),
            ("alerts", "bigint"),
        ],
        "agg_daily_fraud": [
            ("day", "date"),
            ("transactions", "bigint"),
            ("alerts", "bigint"),
            ("amount_total", "numeric"),
            ("alert_amount_total", "numeric"),
        ],
    }


def test_empty_then_full_then_incremental_then_unchanged(database_url: str, world: World) -> None:
    """From an empty database (migrations + dbt), then bronze filled, then more arrives: gold
    equals what the events say at every step, and a build with nothing new changes nothing."""
    empty = built(database_url)
    assert empty.applied_migrations  # migrations ran first, from nothing
    assert rows(database_url, "SELECT count(*) FROM gold.fact_transactions") == [(0,)]
    bronze = Bronze(database_url)
    alerts = alerts_of(world)
    first, rest = world.events[:2000], world.events[2000:]
    first_ids = {e.txn.transaction_id for e in first}
    bronze.write(
        bronze.transaction_rows(first),
        bronze.alert_rows(a for a in world.alerts if a.transaction_id in first_ids),
    )
    assert built(database_url).applied_migrations == []
    assert gold(database_url) == expected(first, alerts)

    bronze.write(
        bronze.transaction_rows(rest),
        bronze.alert_rows(a for a in world.alerts if a.transaction_id not in first_ids),
    )
    built(database_url)
    want = expected(world.events, alerts)
    got = gold(database_url)
    assert got == want
    assert len(got.fact) == len(world.events) and sum(v[4] for v in got.fact.values()) == len(
        alerts
    )

    # Silver: one row per transaction, the typed fields as the contract parsed them, and the
    # original timestamp text (the event's own UTC offset) kept for the detector's features.
    silver = {
        r[0]: r[1:]
        for r in rows(
            database_url,
            "SELECT transaction_id, product_id, payment_method, currency, latitude, longitude,"
            " schema_version, event_timestamp FROM silver.transactions",
        )
    }
    assert silver == {
        e.txn.transaction_id: (
            e.txn.product_id,
            e.txn.payment_method,
            e.txn.currency,
            e.txn.latitude,
            e.txn.longitude,
            e.txn.schema_version,
            orjson.loads(e.raw)["timestamp"],
        )
        for e in world.events
    }
    # Dimensions and the feature store agree with the facts.
    per_customer: dict[str, list[Decimal]] = defaultdict(list)
    for e in world.events:
        per_customer[e.txn.customer_id].append(e.txn.amount)
    customers = {
        r[0]: r[1:]
        for r in rows(
            database_url,
            "SELECT customer_id, transactions, amount_total, amount_max FROM gold.dim_customer",
        )
    }
    assert customers == {c: (len(a), sum(a), max(a)) for c, a in per_customer.items()}
    features = {
        r[0]: r[1:]
        for r in rows(
            database_url, "SELECT customer_id, transactions, alerts FROM gold.customer_features"
        )
    }
    alert_count: dict[str, int] = defaultdict(int)
    for a in alerts.values():
        alert_count[a.customer_id] += 1
    assert features == {c: (len(a), alert_count[c]) for c, a in per_customer.items()}
    stores = {r[0] for r in rows(database_url, "SELECT store_id FROM gold.dim_store")}
    assert stores == {e.txn.store_id for e in world.events}
    days = [r[0] for r in rows(database_url, "SELECT date_day FROM gold.dim_date ORDER BY 1")]
    assert days[0] == min(want.daily) and days[-1] == max(want.daily)
    assert len(days) == (days[-1] - days[0]).days + 1

    snapshot = {t: table(database_url, t) for t in GOLD_TABLES}
    again = built(database_url)
    assert {t: table(database_url, t) for t in GOLD_TABLES} == snapshot
    # Every check of every build is recorded, with its measured value.
    checks = rows(
        database_url,
        "SELECT status, count(*) FROM silver.quality_results"
        " WHERE invocation_id = (SELECT invocation_id FROM silver.quality_results"
        " ORDER BY checked_at DESC LIMIT 1) GROUP BY status",
    )
    assert dict(checks) == {"pass": len(again.of("test"))}
    # Freshness is a check too (the streams wrote just now), measured in seconds.
    fresh = rows(
        database_url,
        "SELECT check_name, status, unit FROM silver.quality_results"
        " WHERE check_name LIKE '%_fresh' ORDER BY checked_at DESC, check_name LIMIT 2",
    )
    assert sorted(fresh) == [
        ("bronze_fraud_alerts_fresh", "pass", "seconds"),
        ("bronze_transactions_fresh", "pass", "seconds"),
    ]


GOLD_TABLES = (
    "fact_transactions",
    "fact_fraud_alerts",
    "agg_hourly_sales",
    "agg_daily_fraud",
    "dim_customer",
    "dim_store",
    "dim_product",
    "dim_date",
    "customer_features",
)


def table(url: str, name: str) -> list[tuple[Any, ...]]:
    return rows(url, f"SELECT * FROM gold.{name} ORDER BY 1, 2")


def test_redelivered_and_reloaded_events_leave_gold_unchanged(migrated: str, world: World) -> None:
    """A Kafka redelivery (same coordinates) and a second load of the same events (a producer
    that sent everything twice: new offsets) are each one transaction."""
    bronze = Bronze(migrated)
    events = world.events[:1500]
    ids = {e.txn.transaction_id for e in events}
    first = bronze.transaction_rows(events)
    alerts = bronze.alert_rows(a for a in world.alerts if a.transaction_id in ids)
    bronze.write(first, alerts)
    built(migrated)
    once = {t: table(migrated, t) for t in GOLD_TABLES}
    bronze.write(first, alerts)  # redelivered: same coordinates, nothing new in bronze
    bronze.write(  # sent again: new offsets, a second bronze row per event and per alert
        bronze.transaction_rows(events),
        bronze.alert_rows(a for a in world.alerts if a.transaction_id in ids),
    )
    assert rows(migrated, "SELECT count(*) FROM bronze.transactions") == [(3000,)]
    report = built(migrated)
    assert {t: table(migrated, t) for t in GOLD_TABLES} == once
    assert gold(migrated) == expected(events, alerts_of(world))
    # The duplicate rate is measured and warns (half of bronze's recent rows are copies).
    (dup,) = [n for n in report.of("test") if n.name == "bronze_transactions_duplicate_rate"]
    assert dup.status == "warn"
    assert rows(
        migrated,
        "SELECT status, measured_value, unit, threshold FROM silver.quality_results"
        " WHERE check_name = 'bronze_transactions_duplicate_rate'"
        " ORDER BY checked_at DESC LIMIT 1",
    ) == [("warn", Decimal("0.5"), "rate", "0.05")]


def _event(template: Event, **changes: Any) -> Event:
    payload = orjson.loads(template.raw) | changes
    raw = orjson.dumps(payload)
    parsed = parse_transaction(raw)
    assert isinstance(parsed, ParsedTransaction), parsed
    return Event(raw, parsed.transaction, {})


def test_a_late_event_and_a_late_alert_land_in_their_hour(migrated: str, world: World) -> None:
    bronze = Bronze(migrated)
    events = world.events[:2000]
    alerts = alerts_of(world)
    early = {e.txn.transaction_id for e in events[:1000]}
    bronze.write(
        bronze.transaction_rows(events),
        # Alerts of the second half are held back: they arrive after their transactions.
        bronze.alert_rows(a for t, a in alerts.items() if t in early),
    )
    built(migrated)
    before = gold(migrated)
    # A late event: stamped in an hour built long ago (a terminal that was offline).
    old = events[100]
    late = _event(
        old, transaction_id="late-1", amount="123.45", timestamp=old.txn.timestamp.isoformat()
    )
    late_alerts = {
        t: a
        for t, a in alerts.items()
        if t not in early and t in {e.txn.transaction_id for e in events}
    }
    assert late_alerts, "the world should raise alerts in its second half"
    bronze.write(bronze.transaction_rows([late]), bronze.alert_rows(late_alerts.values()))
    built(migrated)
    after = gold(migrated)
    assert after == expected(
        [*events, late], {**{t: alerts[t] for t in early if t in alerts}, **late_alerts}
    )
    hour = (old.txn.store_id, old.txn.timestamp.astimezone(UTC).replace(minute=0, second=0))
    assert after.hourly[hour][0] == before.hourly[hour][0] + 1
    assert after.hourly[hour][1] == before.hourly[hour][1] + Decimal("123.45")
    changed_hours = {k for k in after.hourly if after.hourly[k] != before.hourly.get(k)}
    late_hours = {
        (a.store_id, a.event_time.astimezone(UTC).replace(minute=0, second=0))
        for a in late_alerts.values()
    }
    assert changed_hours == late_hours | {hour}
    # An alert that comes before its transaction waits in silver, then completes the fact.
    orphan = _event(old, transaction_id="alert-first", amount="50.00")
    decision = msgspec.structs.replace(
        alerts[next(iter(late_alerts))], transaction_id="alert-first", amount=Decimal("50.00")
    )
    bronze.write(alerts=bronze.alert_rows([decision]))
    built(migrated)
    assert rows(
        migrated,
        "SELECT transaction_found FROM silver.fraud_alerts WHERE transaction_id = 'alert-first'",
    ) == [(False,)]
    assert "alert-first" not in gold(migrated).fact
    bronze.write(bronze.transaction_rows([orphan]))
    built(migrated)
    assert gold(migrated).fact["alert-first"][4:] == (True, decision.score)


def test_a_bad_row_fails_the_quality_gate_with_the_check_named(migrated: str, world: World) -> None:
    bronze = Bronze(migrated)
    bronze.write(bronze.transaction_rows(world.events[:500]))
    built(migrated)
    facts = rows(migrated, "SELECT count(*) FROM gold.fact_transactions")
    bad = bronze.transaction_rows([world.events[600]])
    bad[0] = (*bad[0][:8], "brl", *bad[0][9:])  # bronze takes any 3 characters
    bronze.write(bad)
    report = build(migrated)
    assert not report.ok
    assert (
        report.reason()
        == "quality gate failed: silver_transactions_currency_is_iso4217 (1 failing)"
    )
    # The gate held: gold did not take the bad row.
    assert rows(migrated, "SELECT count(*) FROM gold.fact_transactions") == facts
    assert rows(
        migrated,
        "SELECT status, measured_value, unit FROM silver.quality_results"
        " WHERE check_name = 'silver_transactions_currency_is_iso4217'"
        " ORDER BY checked_at DESC LIMIT 1",
    ) == [("fail", Decimal(1), "rows")]
    # The command says the same in one line and exits non-zero.
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", "warehouse", "build", "--dsn", migrated],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: quality gate failed: silver_transactions_currency_is_iso4217 (1 failing)"
    )
    assert "Traceback" not in done.stderr and migrated not in done.stderr + done.stdout
