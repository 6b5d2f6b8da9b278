"""What the three jobs share: the environment, the Kafka source and sinks, the warehouse sinks.

Thin wiring around PyFlink (no detection logic here). Choices, with the reasons:

- **Thread mode** (``python.execution-mode: thread``): Python runs inside the TaskManager's JVM,
  ~5x faster than process mode for keyed state (MISSION.md).
- **The Kafka source is the Table API's connector** (``raw`` format) turned into a DataStream:
  it is the only PyFlink source that gives each record's topic, partition and offset (the
  DataStream wrapper deserializes values only), which bronze's idempotent keys and the dead
  letters' source coordinates need. Every record is readable as bytes, so nothing is lost in a
  deserializer; a record without a value becomes a dead letter.
- **Kafka sinks are transactional (exactly-once)**: readers with ``read_committed`` see each
  alert, dead letter and metric once, when the checkpoint that produced it completes.
- **bronze.transactions and bronze.fraud_alerts go through Flink's JDBC connector** (Table API):
  it buffers and flushes on every checkpoint (at-least-once) and upserts on the table's primary
  key (the source's Kafka coordinates), so a replay after a failure rewrites the same rows:
  effectively exactly-once rows. ``stringtype=unspecified`` lets PostgreSQL cast text to
  ``jsonb``/``numeric``/``timestamptz``.
- **bronze.dead_letters is written with psycopg, synchronously** (``ON CONFLICT DO NOTHING`` on
  its unique coordinates + stage): its key columns are generated from the ``source`` JSON, which
  the JDBC connector's upsert cannot target, and dead letters are rare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec

from streamflow_jobs.events import (
    DEAD_LETTER_PAYLOAD_LIMIT,
    DeadLetter,
    ParsedTransaction,
    ParseFailure,
    SourceRef,
    dead_letter_for,
    parse_transaction,
)
from streamflow_jobs.flink.args import JobArgs

log = logging.getLogger("streamflow.flink")
MAX_PARALLELISM = 128  # key groups: fixed for the life of a job's state (rescaling keeps it)
# Flink's KafkaSink asks for this transaction timeout; brokers allow up to 15 min by default.
TRANSACTION_TIMEOUT_MS = 900_000
_encode = msgspec.json.Encoder().encode
# The first columns of bronze.transactions and bronze.fraud_alerts: the source transaction's
# Kafka coordinates (the upsert key: a redelivery rewrites the same row) and its ids.
SOURCE_KEY = ["kafka_topic", "kafka_partition", "kafka_offset"]
SOURCE_COLUMNS = [
    ("kafka_topic", "STRING"),
    ("kafka_partition", "INT"),
    ("kafka_offset", "BIGINT"),
    ("transaction_id", "STRING"),
    ("customer_id", "STRING"),
    ("store_id", "STRING"),
]


def environment(job: str, parallelism: int | None = None) -> tuple[Any, Any]:
    """A StreamExecutionEnvironment in thread mode and its StreamTableEnvironment.

    Checkpointing (interval, mode, storage) comes from the cluster's configuration: the
    FlinkDeployment's ``flinkConfiguration``, or ``flink run -D...`` locally.
    """
    from pyflink.common import Configuration  # noqa: PLC0415
    from pyflink.datastream import StreamExecutionEnvironment  # noqa: PLC0415
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment  # noqa: PLC0415

    config = Configuration()
    config.set_string("python.execution-mode", "thread")
    config.set_string("pipeline.name", f"streamflow-{job}")
    # The Table API's Kafka source is wrapped in the DataStream program: no SQL planner state.
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_max_parallelism(MAX_PARALLELISM)
    if parallelism:
        env.set_parallelism(parallelism)
    t_env = StreamTableEnvironment.create(
        env, environment_settings=EnvironmentSettings.in_streaming_mode()
    )
    return env, t_env


def sql_string(value: str) -> str:
    """A SQL string literal (DDL options are built from user-given names)."""
    return "'" + value.replace("'", "''") + "'"


def kafka_source(
    t_env: Any, args: JobArgs, topic: str, job: str, *, name: str, starting: str | None = None
) -> Any:
    """A DataStream of ``Row(key: bytes|None, value: bytes|None, topic, partition, offset,
    produced)`` read from ``topic`` with ``read_committed`` (``produced``: the record's
    timestamp, an Instant; :func:`epoch_ms` reads it)."""
    kafka_table(t_env, args, topic, job, name=name, starting=starting)
    return t_env.to_data_stream(
        t_env.sql_query(
            f"SELECT `k`, `v`, `topic`, `partition`, `offset`, `produced` FROM `{name}`"
        )
    )


def kafka_table(
    t_env: Any, args: JobArgs, topic: str, job: str, *, name: str, starting: str | None = None
) -> None:
    """Declare the Kafka table ``name`` over ``topic``: columns k, v (raw bytes), topic,
    partition, offset, produced (the record's timestamp)."""
    mode = starting or args.starting_offsets
    startup = {
        "committed": "group-offsets",
        "earliest": "earliest-offset",
        "latest": "latest-offset",
    }[mode]
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": args.bootstrap_servers,
        "properties.group.id": args.group(job),
        "properties.isolation.level": "read_committed",
        # group-offsets without committed offsets: start from the beginning, never skip.
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": startup,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    with_clause = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in options.items())
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE `{name}` (
            `k` BYTES,
            `v` BYTES,
            `topic` STRING METADATA VIRTUAL,
            `partition` INT METADATA VIRTUAL,
            `offset` BIGINT METADATA VIRTUAL,
            `produced` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
        ) WITH ({with_clause})"""
    )


def kafka_sink(args: JobArgs, topic: str, job: str, sink: str, *, exactly_once: bool = True) -> Any:
    """A KafkaSink of strings to ``topic``: transactional (exactly-once) by default."""
    from pyflink.common.serialization import SimpleStringSchema  # noqa: PLC0415
    from pyflink.datastream.connectors.base import DeliveryGuarantee  # noqa: PLC0415
    from pyflink.datastream.connectors.kafka import (  # noqa: PLC0415
        KafkaRecordSerializationSchema,
        KafkaSink,
    )

    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(args.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_property("transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS))
        .set_property("compression.type", "lz4")
        .set_property("linger.ms", "5")
    )
    if exactly_once:
        builder = builder.set_delivery_guarantee(
            DeliveryGuarantee.EXACTLY_ONCE
        ).set_transactional_id_prefix(args.transactional_id(job, sink))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()


def epoch_ms(instant: Any) -> int:
    """Milliseconds of a Kafka record's timestamp; 0 when absent. In thread mode a nested
    Instant arrives as the Java object itself (``toEpochMilli``), at the top level as
    PyFlink's ``Instant`` (``to_epoch_milli``)."""
    if instant is None:
        return 0
    java = getattr(instant, "toEpochMilli", None)
    return int(java() if java is not None else instant.to_epoch_milli())


def jdbc_url(dsn: str) -> tuple[str, str, str]:
    """(JDBC URL, user, password) from a libpq URL or key/value DSN."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    database = str(info.get("dbname") or info.get("user") or "postgres")
    params = "stringtype=unspecified&reWriteBatchedInserts=true"
    if info.get("sslmode") and info["sslmode"] not in ("disable", "allow", "prefer"):
        params += f"&sslmode={quote(str(info['sslmode']))}"
    url = f"jdbc:postgresql://{host}:{port}/{quote(database)}?{params}"
    return url, str(info.get("user") or ""), str(info.get("password") or "")


def jdbc_sink_table(
    t_env: Any, name: str, table: str, columns: list[tuple[str, str]], key: list[str], dsn: str
) -> None:
    """Declare a JDBC upsert sink ``name`` for PostgreSQL ``table`` (schema-qualified)."""
    url, user, password = jdbc_url(dsn)
    options = {
        "connector": "jdbc",
        "url": url,
        "table-name": table,
        "username": user,
        "password": password,
        "sink.buffer-flush.max-rows": "1000",
        "sink.buffer-flush.interval": "200ms",
        "sink.max-retries": "5",
    }
    cols = ", ".join(f"`{c}` {t}" for c, t in columns)
    pk = ", ".join(f"`{c}`" for c in key)
    with_clause = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in options.items())
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE `{name}` ({cols}, PRIMARY KEY ({pk}) NOT ENFORCED) "
        f"WITH ({with_clause})"
    )


def row_type(columns: list[tuple[str, str]]) -> Any:
    """PyFlink type information for rows of ``columns`` (SQL types STRING/INT/BIGINT/DOUBLE/
    BOOLEAN)."""
    from pyflink.common import Types  # noqa: PLC0415

    sql_to_type = {
        "STRING": Types.STRING(),
        "INT": Types.INT(),
        "BIGINT": Types.LONG(),
        "DOUBLE": Types.DOUBLE(),
        "BOOLEAN": Types.BOOLEAN(),
    }
    return Types.ROW_NAMED([c for c, _ in columns], [sql_to_type[t] for _, t in columns])


# --------------------------------------------------------------------------------------------
# Dead letters
# --------------------------------------------------------------------------------------------
def source_ref(record: Any) -> SourceRef:
    return SourceRef(kind="kafka", topic=record[2], partition=record[3], offset=record[4])


def unreadable(record: Any) -> DeadLetter:
    """A Kafka record without a value (a tombstone, or a producer that sent none)."""
    return DeadLetter(
        error_type="empty_record",
        error_message="the Kafka record has no value",
        stage="parse",
        source=source_ref(record),
        payload="",
        payload_bytes=0,
        payload_truncated=False,
        failed_at=datetime.now(UTC),
    )


def failure_letter(failure: ParseFailure, raw: bytes, record: Any) -> DeadLetter:
    return dead_letter_for(failure, raw[: DEAD_LETTER_PAYLOAD_LIMIT + 1], source_ref(record),
                           None, len(raw))  # fmt: skip


def sink_letter(error_type: str, message: str, raw: bytes, record: Any) -> DeadLetter:
    """A record that is valid but cannot be stored or evaluated (stage ``sink``)."""
    cut = raw[:DEAD_LETTER_PAYLOAD_LIMIT]
    return DeadLetter(
        error_type=error_type,
        error_message=message,
        stage="sink",
        source=source_ref(record),
        payload=cut.decode("utf-8", errors="backslashreplace"),
        payload_bytes=len(raw),
        payload_truncated=len(raw) > len(cut),
        failed_at=datetime.now(UTC),
    )


def parse(raw: bytes) -> ParsedTransaction | ParseFailure:
    """The core's parser, made total: msgspec raises UnicodeDecodeError (not a DecodeError) for
    invalid UTF-8 inside a JSON string, which ``parse_transaction`` does not catch yet; here it
    is the dead letter it should be, never a task failure that restarts for ever."""
    try:
        return parse_transaction(raw)
    except UnicodeDecodeError as exc:
        return ParseFailure("invalid_encoding", f"not UTF-8: {exc.reason} at byte {exc.start}")


def encode_json(value: Any) -> str:
    return _encode(value).decode("utf-8")


_DEAD_LETTER_SQL = """
INSERT INTO bronze.dead_letters (error_type, error_message, stage, source, payload,
                                 payload_bytes, payload_truncated, failed_at)
VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


class DeadLetterWriter:
    """Writes each dead letter to ``bronze.dead_letters`` before passing it on to Kafka.

    Synchronous (one autocommit INSERT per dead letter): the record is in the table before the
    checkpoint that covers its source offset can complete, so a failure cannot lose it; a
    redelivery after recovery is a no-op (unique on coordinates + stage). Used as a ``map``.
    """

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn
        self.conn: Any = None

    def open(self) -> None:
        if self.dsn:
            self.conn = _connect(self.dsn)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def write(self, letter_json: str) -> str:
        if self.dsn is None:
            return letter_json
        letter = msgspec.json.decode(letter_json)
        params = (
            letter["error_type"],
            letter["error_message"][:4000].replace("\x00", "\\u0000"),
            letter["stage"],
            encode_json(letter["source"]),
            letter["payload"].replace("\x00", "\\u0000"),  # text columns refuse NUL
            letter["payload_bytes"],
            letter["payload_truncated"],
            letter["failed_at"],
        )
        for attempt in range(5):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = _connect(self.dsn)
                self.conn.execute(_DEAD_LETTER_SQL, params)
                return letter_json
            except Exception:
                log.warning("dead letter insert failed (attempt %d)", attempt + 1,
                            exc_info=True)  # fmt: skip
                self.close()
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        return letter_json


def _connect(dsn: str) -> Any:
    import psycopg  # noqa: PLC0415

    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def key_by_first_field(stream: Any, key_type: Any, value_type: Any) -> Any:
    """Key a stream of ``Row(key, value)`` by its first field on the Java side.

    PyFlink's ``key_by`` runs a Python key selector per record (a Python call and a Row built
    per record: a third of the fraud-detector's per-event cost in the spike). When the key is
    already a field (computed in SQL), this builds the same KeyedStream that ``key_by`` builds
    after its Python step: Java's ``KeyByKeySelector`` on field 0. Private PyFlink API
    (``KeyedStream``'s constructor), kept to this one function and tested.
    """
    from pyflink.common import Types  # noqa: PLC0415
    from pyflink.datastream.data_stream import KeyedStream  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    j_selector = get_gateway().jvm.KeyByKeySelector()
    j_keyed = stream._j_data_stream.keyBy(j_selector, Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(j_keyed, value_type, stream)


def subtask_index(runtime_context: Any) -> int:
    """This subtask's index. PyFlink 2.2.1's ``get_index_of_this_subtask()`` raises in thread
    mode (Flink 2 removed the Java method it calls); the Java context's TaskInfo has it."""
    try:
        return int(runtime_context.get_index_of_this_subtask())
    except AttributeError:
        j_context = runtime_context._runtime_context
        return int(j_context.getTaskInfo().getIndexOfThisSubtask())


def counters(runtime_context: Any, names: Iterable[str]) -> dict[str, Callable[[int], None]]:
    """Flink counters by name: each an ``inc(n)``. Metrics never fail a job: a counter that
    cannot be registered becomes a no-op (logged once)."""
    out: dict[str, Callable[[int], None]] = {}
    try:
        group = runtime_context.get_metrics_group().add_group("streamflow")
    except Exception:
        log.warning("metrics unavailable", exc_info=True)
        group = None
    for name in names:
        try:
            counter = group.counter(name) if group is not None else None
        except Exception:
            log.warning("counter %s unavailable", name, exc_info=True)
            counter = None
        out[name] = counter.inc if counter is not None else _ignore
    return out


def _ignore(n: int = 1) -> None:
    """A counter that could not be registered."""
