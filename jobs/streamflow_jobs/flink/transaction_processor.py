"""transaction-processor: transactions topic -> parse + validate -> bronze.transactions.

Every record ends in exactly one place: a valid transaction is a row of ``bronze.transactions``
(keyed by its Kafka coordinates: a redelivery rewrites the same row); anything else is a dead
letter, in ``bronze.dead_letters`` and on the dead-letter topic, with its error, stage, source
coordinates and the payload cut at 10 KiB. A record without a value is a dead letter too.

    flink run -pym streamflow_jobs.flink.transaction_processor --bootstrap-servers ... \
        --transactions-topic T --alerts-topic A --metrics-topic M --dead-letter-topic D
    (warehouse: the environment variable STREAMFLOW_POSTGRES_DSN)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import MapFunction, OutputTag, ProcessFunction

from streamflow_jobs.events import ParseFailure
from streamflow_jobs.flink import common
from streamflow_jobs.flink.args import POSTGRES_DSN_ENV, JobArgs, parse_args, postgres_dsn, topic

JOB = "transaction-processor"
BRONZE_COLUMNS = [
    *common.SOURCE_COLUMNS,
    ("product_id", "STRING"),
    ("amount", "STRING"),
    ("currency", "STRING"),
    ("payment_method", "STRING"),
    ("latitude", "DOUBLE"),
    ("longitude", "DOUBLE"),
    ("event_time", "STRING"),
    ("schema_version", "INT"),
    ("payload", "STRING"),
]
BRONZE_KEY = common.SOURCE_KEY


def process(record: Any) -> tuple[tuple[Any, ...] | None, str | None, str]:
    """One Kafka record -> (bronze row, None, outcome) or (None, dead letter JSON, error type).

    Pure: the Flink function below only routes what this returns (unit-tested without Flink).
    """
    raw = record[1]
    if raw is None:
        letter = common.unreadable(record)
        return None, common.encode_json(letter), letter.error_type
    raw = bytes(raw)
    parsed = common.parse(raw)
    if isinstance(parsed, ParseFailure):
        return (
            None,
            common.encode_json(common.failure_letter(parsed, raw, record)),
            (parsed.error_type),
        )
    if b"\\u0000" in raw:
        # Valid JSON, but PostgreSQL's text and jsonb cannot hold a NUL character: a dead letter
        # here, not a sink that fails on every retry.
        letter = common.sink_letter(
            "unstorable_payload", "the event holds a \\u0000 (NUL) character", raw, record
        )
        return None, common.encode_json(letter), letter.error_type
    t = parsed.transaction
    # The payload is stored as the event arrived (jsonb); the parser proved it is UTF-8 JSON.
    row = (
        record[2],
        record[3],
        record[4],
        t.transaction_id,
        t.customer_id,
        t.store_id,
        t.product_id,
        str(t.amount),
        t.currency,
        t.payment_method,
        t.latitude,
        t.longitude,
        t.timestamp.isoformat(),
        t.schema_version,
        raw.decode("utf-8"),
    )
    version = "v1" if t.schema_version == 1 else "v2" if t.schema_version == 2 else "newer"
    return row, None, version


DEAD_TAG = OutputTag("dead-letters", Types.STRING())


class Parse(ProcessFunction):  # type: ignore[misc]
    def open(self, runtime_context: Any) -> None:
        self.count = common.counters(
            runtime_context, ["events_in", "bronze_rows", "dead_letters", "v1", "v2", "newer"]
        )
        self.by_error: dict[str, Any] = {}
        self.metrics_context = runtime_context

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count["events_in"](1)
        row, letter, outcome = process(value)
        if row is not None:
            self.count["bronze_rows"](1)
            self.count[outcome](1)
            yield Row(*row)
        else:
            self.count["dead_letters"](1)
            counter = self.by_error.get(outcome)
            if counter is None:
                name = f"dead_letters_{outcome}"
                counter = self.by_error[outcome] = common.counters(self.metrics_context, [name])[
                    name
                ]
            counter(1)
            yield DEAD_TAG, letter


class WriteDeadLetter(MapFunction):  # type: ignore[misc]
    """bronze.dead_letters first (synchronously), then the dead-letter topic."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn

    def open(self, runtime_context: Any) -> None:
        self.writer = common.DeadLetterWriter(self.dsn)
        self.writer.open()

    def close(self) -> None:
        self.writer.close()

    def map(self, value: str) -> str:
        return self.writer.write(value)


def build(env: Any, t_env: Any, args: JobArgs, dsn: str) -> None:
    source = common.kafka_source(t_env, args, args.transactions_topic, JOB, name="transactions")
    parsed = (
        source.process(Parse(), output_type=common.row_type(BRONZE_COLUMNS))
        .name("parse")
        .uid("parse")
    )
    common.jdbc_sink_table(
        t_env, "bronze_transactions", "bronze.transactions", BRONZE_COLUMNS, BRONZE_KEY, dsn
    )
    statements = t_env.create_statement_set()
    statements.add_insert("bronze_transactions", t_env.from_data_stream(parsed))
    statements.attach_as_datastream()
    dead_letters(parsed.get_side_output(DEAD_TAG), args, dsn, JOB)


def dead_letters(stream: Any, args: JobArgs, dsn: str | None, job: str) -> None:
    """Dead letters (JSON strings) -> bronze.dead_letters (if a DSN is set) -> the topic."""
    (
        stream.map(WriteDeadLetter(dsn), output_type=Types.STRING())
        .name("dead-letters-to-bronze")
        .uid("dead-letters-to-bronze")
        .start_new_chain()
        .sink_to(common.kafka_sink(args, topic(args, "dead_letter_topic"), job, "dead-letters"))
        .name("dead-letters-to-kafka")
        .uid("dead-letters-to-kafka")
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, prog=JOB)
    dsn = postgres_dsn()
    if dsn is None:
        sys.exit(f"{JOB}: set {POSTGRES_DSN_ENV} to the warehouse's PostgreSQL DSN")
    env, t_env = common.environment(JOB)
    build(env, t_env, args, dsn)
    env.execute(f"streamflow-{JOB}")


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s: cloudpickle ships functions of
    # __main__ by value (with their globals), those of a module by reference.
    from streamflow_jobs.flink.transaction_processor import main as _main

    _main()
