"""Gold as the events say it should be, computed in plain Python (never by the warehouse's SQL),
and gold as the warehouse holds it, in the same shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg

from streamflow_jobs.events import FraudDecision
from tests.integration.bronze import Event


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


@dataclass(frozen=True)
class Expected:
    """Gold, computed from the events and decisions in plain Python."""

    fact: dict[str, tuple[Any, ...]]
    hourly: dict[tuple[str, datetime], tuple[Any, ...]]
    daily: dict[date, tuple[Any, ...]]


def expected(events: Iterable[Event], alerts: dict[str, FraudDecision]) -> Expected:
    fact: dict[str, tuple[Any, ...]] = {}
    for e in events:
        t = e.txn
        if t.transaction_id in fact:
            continue  # a second copy of an event is the same transaction
        alert = alerts.get(t.transaction_id)
        fact[t.transaction_id] = (
            t.customer_id,
            t.store_id,
            t.amount,
            t.timestamp.astimezone(UTC),
            alert is not None,
            alert.score if alert else None,
        )
    hourly_groups: dict[tuple[str, datetime], list[tuple[Any, ...]]] = defaultdict(list)
    daily_groups: dict[date, list[tuple[Any, ...]]] = defaultdict(list)
    for row in fact.values():
        when: datetime = row[3]
        hourly_groups[(row[1], when.replace(minute=0, second=0, microsecond=0))].append(row)
        daily_groups[when.date()].append(row)
    hourly = {}
    for key, group in hourly_groups.items():
        total = sum((r[2] for r in group), Decimal(0))
        avg = (total / len(group)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        hourly[key] = (len(group), total, avg, sum(r[4] for r in group))
    daily = {
        day: (
            len(group),
            sum(r[4] for r in group),
            sum((r[2] for r in group), Decimal(0)),
            sum((r[2] for r in group if r[4]), Decimal(0)),
        )
        for day, group in daily_groups.items()
    }
    return Expected(fact, hourly, daily)


def gold(url: str) -> Expected:
    fact = {
        r[0]: tuple(r[1:])
        for r in rows(
            url,
            "SELECT transaction_id, customer_id, store_id, amount, event_time, is_alert, score"
            " FROM gold.fact_transactions",
        )
    }
    hourly = {
        (r[0], r[1]): tuple(r[2:])
        for r in rows(
            url,
            "SELECT store_id, hour_start, transactions, amount_total, amount_avg, alerts"
            " FROM gold.agg_hourly_sales",
        )
    }
    daily = {
        r[0]: tuple(r[1:])
        for r in rows(
            url,
            "SELECT day, transactions, alerts, amount_total, alert_amount_total"
            " FROM gold.agg_daily_fraud",
        )
    }
    return Expected(fact, hourly, daily)
