"""Bronze rows exactly as the streaming jobs write them, made from generated events.

The transaction-processor parses each Kafka record with the core's parser and upserts the
``events.Transaction`` fields, the record's coordinates and the original payload into
``bronze.transactions`` (``ON CONFLICT DO NOTHING``: a redelivery is the same row); the
fraud-detector writes each ``events.FraudAlert`` (reasons as JSON) into ``bronze.fraud_alerts``.
Producers key records by customer_id, so one customer's events share a partition. The alerts
here are the core ``Detector``'s decisions on the same events (what the Flink job raises).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import orjson
import psycopg

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import FraudDecision, ParsedTransaction, Transaction, parse_transaction
from streamflow_jobs.generator import Generator, GeneratorConfig
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.replay import BATCH_SIZE
from streamflow_jobs.rules.config import BlacklistRule, RulesConfig
from streamflow_jobs.state import CustomerState

PARTITIONS = 3
TXN_COLUMNS = (
    "kafka_topic, kafka_partition, kafka_offset, transaction_id, customer_id, store_id, "
    "product_id, amount, currency, payment_method, latitude, longitude, event_time, "
    "schema_version, payload, ingested_at"
)
ALERT_COLUMNS = (
    "kafka_topic, kafka_partition, kafka_offset, transaction_id, customer_id, store_id, amount, "
    "event_time, score, rules_score, ml_score, reasons, rules_version, model_version, ingested_at"
)
_reasons = msgspec.json.Encoder()


@dataclass
class Event:
    raw: bytes  # the record's value, as produced
    txn: Transaction
    label: dict[str, Any]


@dataclass
class World:
    events: list[Event]
    decisions: dict[str, FraudDecision]  # by transaction_id
    blacklist: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> list[FraudDecision]:
        return [d for d in self.decisions.values() if d.is_alert]


def make_world(events: int, seed: int = 5, customers: int = 200, **kwargs: Any) -> World:
    """Generated events (in event-time order) and the detector's decisions on them."""
    gen = Generator(GeneratorConfig(events=events, seed=seed, customers=customers, **kwargs))
    out: list[Event] = []
    for event, label in gen.generate():
        raw = orjson.dumps(event)
        parsed = parse_transaction(raw)
        assert isinstance(parsed, ParsedTransaction), parsed
        out.append(Event(raw, parsed.transaction, label))
    rules = RulesConfig(blacklist=BlacklistRule(customers=gen.blacklist))
    detector = Detector(rules, load_model())
    states: dict[str, CustomerState] = {}
    decisions: dict[str, FraudDecision] = {}
    for i in range(0, len(out), BATCH_SIZE):
        txns = [e.txn for e in out[i : i + BATCH_SIZE]]
        for d in detector.decide_batch(txns, detector.evaluate_batch(states, txns)):
            decisions[d.transaction_id] = d
    return World(out, decisions, gen.blacklist)


def partition_of(key: str, partitions: int = PARTITIONS) -> int:
    return zlib.crc32(key.encode()) % partitions


class Bronze:
    """Appends records to bronze the way the jobs do, keeping each partition's next offset."""

    def __init__(self, url: str, txn_topic: str = "transactions", alert_topic: str = "alerts"):
        self.url = url
        self.txn_topic, self.alert_topic = txn_topic, alert_topic
        self.offsets: dict[tuple[str, int], int] = {}

    def _next(self, topic: str, key: str) -> tuple[str, int, int]:
        p = partition_of(key)
        offset = self.offsets.get((topic, p), 0)
        self.offsets[(topic, p)] = offset + 1
        return topic, p, offset

    def transaction_rows(
        self, events: Iterable[Event], ingested_at: datetime | None = None
    ) -> list[tuple[Any, ...]]:
        rows = []
        for e in events:
            t = e.txn
            rows.append(
                (
                    *self._next(self.txn_topic, t.customer_id),
                    t.transaction_id,
                    t.customer_id,
                    t.store_id,
                    t.product_id,
                    t.amount,
                    t.currency,
                    t.payment_method,
                    t.latitude,
                    t.longitude,
                    t.timestamp,
                    t.schema_version,
                    e.raw.decode(),
                    ingested_at,
                )
            )
        return rows

    def alert_rows(
        self, alerts: Iterable[FraudDecision], ingested_at: datetime | None = None
    ) -> list[tuple[Any, ...]]:
        return [
            (
                *self._next(self.alert_topic, a.customer_id),
                a.transaction_id,
                a.customer_id,
                a.store_id,
                a.amount,
                a.event_time,
                a.score,
                a.rules_score,
                a.ml_score,
                _reasons.encode(a.reasons).decode(),
                a.rules_version,
                a.model_version,
                ingested_at,
            )
            for a in alerts
        ]

    def write(
        self,
        transactions: Sequence[tuple[Any, ...]] = (),
        alerts: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Upsert rows (COPY into a temporary table, then INSERT ... ON CONFLICT DO NOTHING, as
        an idempotent sink does); a row without ingested_at gets the default, now()."""
        with psycopg.connect(self.url) as conn:
            for table, columns, rows in (
                ("transactions", TXN_COLUMNS, transactions),
                ("fraud_alerts", ALERT_COLUMNS, alerts),
            ):
                if not rows:
                    continue
                conn.execute(
                    f"CREATE TEMP TABLE incoming ON COMMIT DROP AS "
                    f"SELECT {columns} FROM bronze.{table} WITH NO DATA"
                )
                with conn.cursor().copy(f"COPY incoming ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.execute(
                    f"INSERT INTO bronze.{table} ({columns}) SELECT "
                    + ", ".join(
                        "coalesce(ingested_at, now())" if c.strip() == "ingested_at" else c
                        for c in columns.split(",")
                    )
                    + " FROM incoming ON CONFLICT DO NOTHING"
                )
                conn.commit()
