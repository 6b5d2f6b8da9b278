"""Bronze retention: keep what the Kafka topics keep, and never drop what silver has not read.

Bronze mirrors the topics (transactions 7 days, alerts and dead letters 30 days by default, the
FraudPipeline's ``topics.*.retentionHours``); silver and gold keep history. A transaction or an
alert older than its retention is deleted only when its transaction_id is in silver (a second
copy of an event silver holds goes too): a warehouse that has not been built for a week loses
nothing, and a row silver never read stays (the ``bronze_transactions_all_loaded`` check names
it). Deletes run in bounded batches (short locks next to the streaming writers), then VACUUM
(ANALYZE) returns the space to the table and refreshes the planner's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

# Defaults: the topics' retention (spec.topics.*.retentionHours).
RETENTION = {
    "transactions": timedelta(hours=7 * 24),
    "fraud_alerts": timedelta(hours=30 * 24),
    "dead_letters": timedelta(hours=30 * 24),
}
# Where silver keeps what a bronze table's rows became (by transaction_id).
_LOADED_BY = {
    "transactions": ("silver", "transactions"),
    "fraud_alerts": ("silver", "fraud_alerts"),
}
_TIME_COLUMN = {
    "transactions": "ingested_at",
    "fraud_alerts": "ingested_at",
    "dead_letters": "failed_at",
}
BATCH = 50_000


@dataclass(frozen=True)
class Pruned:
    table: str
    deleted: int
    cutoff: str | None  # rows older than this were eligible; None: silver not built, none were


def prune(dsn: str, table: str, keep: timedelta | None = None) -> Pruned:
    if table not in RETENTION:
        raise ValueError(f"not a bronze table with a retention: {table}")
    keep = RETENTION[table] if keep is None else keep
    column = sql.Identifier(_TIME_COLUMN[table])
    target = sql.Identifier("bronze", table)
    loaded = _LOADED_BY.get(table)
    deleted = 0
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT now() - %s", (keep,)).fetchone()
        before = row[0] if row else None
        condition = sql.SQL("b.{c} < %s").format(c=column)
        if loaded is not None:
            if conn.execute("SELECT to_regclass(%s)", (".".join(loaded),)).fetchone() == (None,):
                return Pruned(table, 0, None)  # silver was never built: keep everything
            condition = sql.SQL(
                "{cond} AND EXISTS"
                " (SELECT 1 FROM {s} AS s WHERE s.transaction_id = b.transaction_id)"
            ).format(cond=condition, s=sql.Identifier(*loaded))
        while True:
            # ctid batches: a bounded delete per statement, whatever the table's key is.
            cur = conn.execute(
                sql.SQL(
                    "DELETE FROM {t} WHERE ctid = ANY (ARRAY("
                    "SELECT b.ctid FROM {t} AS b WHERE {cond} LIMIT %s))"
                ).format(t=target, cond=condition),
                (before, BATCH),
            )
            deleted += cur.rowcount
            if cur.rowcount < BATCH:
                break
    return Pruned(table, deleted, str(before))


def vacuum_analyze(dsn: str) -> list[str]:
    """VACUUM (ANALYZE) bronze's tables, ANALYZE silver and gold; returns what was done."""
    done = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for table in RETENTION:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("bronze", table)))
            done.append(f"vacuum analyze bronze.{table}")
        for schema in ("silver", "gold"):
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
            ).fetchall()
            for (name,) in tables:
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
                done.append(f"analyze {schema}.{name}")
    return done
