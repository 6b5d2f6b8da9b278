"""Dead letters: counted by error type, alerted over a threshold, re-driven once fixed.

A dead letter's cause is fixed when today's parser accepts its payload (a parser or contract
bug was fixed, a newer schema became known, the sink's database came back): such a record is
re-published to the transactions topic, keyed by customer_id as every producer does, each one
once. The ledger (``bronze.dead_letter_redrives``) is claimed before the publish and marked
published after the broker acknowledged it; a claim left by a crash is published by the next
run (at least once; silver keeps one row per transaction_id). A truncated payload (cut at
10 KiB) is never re-driven: it is not the record any more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from streamflow_jobs.events import ParsedTransaction, parse_transaction

# publish(records) -> one (partition, offset) per record, in order, once the broker has them.
Publisher = Callable[[Sequence[tuple[str, bytes]]], list[tuple[int, int]]]


def counts_by_error_type(dsn: str, since: timedelta = timedelta(hours=1)) -> dict[str, int]:
    """Dead letters that failed in the last ``since``, per error type (sorted by name)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT error_type, count(*) FROM bronze.dead_letters"
            " WHERE failed_at > now() - %s GROUP BY 1 ORDER BY 1",
            (since,),
        ).fetchall()
    return {str(kind): int(n) for kind, n in rows}


def over_threshold(counts: dict[str, int], threshold: int) -> dict[str, int]:
    """The error types whose count exceeds ``threshold``."""
    return {kind: n for kind, n in counts.items() if n > threshold}


@dataclass(frozen=True)
class Candidate:
    dead_letter_id: int
    transaction_id: str
    customer_id: str
    error_type: str
    payload: bytes


def redrivable(
    dsn: str, error_types: Sequence[str] | None = None, limit: int = 10_000
) -> list[Candidate]:
    """Dead letters not yet re-driven (or claimed by a run that died) whose payload today's
    parser accepts, oldest first."""
    query = (
        "SELECT d.id, d.error_type, d.payload FROM bronze.dead_letters d"
        " LEFT JOIN bronze.dead_letter_redrives r ON r.dead_letter_id = d.id"
        " WHERE (r.dead_letter_id IS NULL OR r.status = 'claimed') AND NOT d.payload_truncated"
        + (" AND d.error_type = ANY(%(types)s)" if error_types else "")
        + " ORDER BY d.id LIMIT %(limit)s"
    )
    out = []
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        for dead_id, kind, payload in conn.execute(
            query, {"types": list(error_types or []), "limit": limit}
        ):
            raw = str(payload).encode("utf-8", errors="surrogateescape")
            parsed = parse_transaction(raw)
            if isinstance(parsed, ParsedTransaction):
                t = parsed.transaction
                out.append(Candidate(int(dead_id), t.transaction_id, t.customer_id, str(kind), raw))
    return out


@dataclass(frozen=True)
class Redrive:
    candidates: int
    published: int
    topic: str


def redrive(dsn: str, candidates: Sequence[Candidate], topic: str, publish: Publisher) -> Redrive:
    """Claim, publish, record. Claims are taken with ``ON CONFLICT DO NOTHING`` (a concurrent
    run that claimed first keeps them) except for this run's re-publish of stale claims."""
    if not candidates:
        return Redrive(0, 0, topic)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        claimed_ids = {
            row[0]
            for row in conn.execute(
                "INSERT INTO bronze.dead_letter_redrives"
                " (dead_letter_id, transaction_id, error_type, status, topic)"
                " SELECT i, t, e, 'claimed', %s::text"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS c(i, t, e)"
                " ON CONFLICT (dead_letter_id) DO UPDATE SET claimed_at = now()"
                " WHERE bronze.dead_letter_redrives.status = 'claimed'"
                " RETURNING dead_letter_id",
                (
                    topic,
                    [c.dead_letter_id for c in candidates],
                    [c.transaction_id for c in candidates],
                    [c.error_type for c in candidates],
                ),
            ).fetchall()
        }
        conn.commit()
        mine = [c for c in candidates if c.dead_letter_id in claimed_ids]
        if not mine:
            return Redrive(len(candidates), 0, topic)
        where = publish([(c.customer_id, c.payload) for c in mine])
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE bronze.dead_letter_redrives SET status = 'published',"
                " published_at = now(), kafka_partition = %s, kafka_offset = %s"
                " WHERE dead_letter_id = %s",
                [(p, o, c.dead_letter_id) for c, (p, o) in zip(mine, where, strict=True)],
            )
    return Redrive(len(candidates), len(mine), topic)


def kafka_publisher(bootstrap: str, topic: str, timeout: float = 30.0) -> Publisher:
    """The one place that talks to Kafka: a confluent-kafka producer (idempotent, acks=all),
    records keyed by customer_id; returns once every record is acknowledged, or raises."""

    def publish(records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
        )
        results: list[Any] = [None] * len(records)

        def done(i: int) -> Callable[[Any, Any], None]:
            def report(err: Any, msg: Any) -> None:
                results[i] = err if err is not None else (msg.partition(), msg.offset())

            return report

        for i, (key, value) in enumerate(records):
            producer.produce(topic, key=key.encode(), value=value, on_delivery=done(i))
            producer.poll(0)
        left = producer.flush(timeout)
        failed = [r for r in results if not isinstance(r, tuple)]
        if left or failed:
            raise KafkaException(f"{left + len(failed)} of {len(records)} records not delivered")
        return [r for r in results if isinstance(r, tuple)]

    return publish
