"""fraud-detector: transactions keyed by customer -> the core Detector -> alerts, exactly once.

- **Key**: the Kafka record's key (StreamFlow's producers key by ``customer_id``), or, for a
  record without one, the payload's ``customer_id`` read by the SQL ``JSON_VALUE``: either way
  the key is computed on the Java side, so no Python call is spent on it. A record whose key
  is not its own ``customer_id`` would split that customer's state: it becomes a dead letter
  (``key_mismatch``, stage ``detect``), never a silent mis-keyed decision.
- **State**: one ValueState per customer holding the core's versioned byte encoding (never
  pickled); see :func:`detect` for the one place the core is called.
- **Order**: events are decided in arrival order per customer (Kafka keeps a partition's order,
  one customer is one partition), exactly the order ``streamflow replay`` reads a file in, so
  both decide the same. Event time is the rules' business (the velocity window, travel speed,
  hour of day read the event's own timestamp; late and out-of-order events are handled there).
- **Blacklist**: the rules file's list, changed at run time by a compacted control topic
  (``--control-topic``; key ``customer:<id>`` or ``store:<id>``, value ``true``/``false``,
  a tombstone removes the override) through broadcast state: a change applies to every event
  processed after it, without a restart, and survives restarts in the broadcast state.
- **Outputs**: alerts (the same JSON as a ``streamflow replay`` decision line) to the alerts
  topic through a transactional sink, and to ``bronze.fraud_alerts`` (upserted on the source
  transaction's Kafka coordinates) when ``STREAMFLOW_POSTGRES_DSN`` is set.
"""

from __future__ import annotations

import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, KeyedProcessFunction, OutputTag
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from streamflow_jobs.detector import Detector, with_shadow
from streamflow_jobs.events import (
    DEAD_LETTER_PAYLOAD_LIMIT,
    DeadLetter,
    FraudDecision,
    ParseFailure,
    SourceRef,
    Transaction,
)
from streamflow_jobs.flink import common
from streamflow_jobs.flink.args import (
    MODEL_PATH,
    RULES_PATH,
    JobArgs,
    parse_args,
    postgres_dsn,
    topic,
)
from streamflow_jobs.flink.thread_mode import install_gil_safe_walk
from streamflow_jobs.state import CustomerState, StateEncodingError, decode_state, encode_state

JOB = "fraud-detector"
ALERT_COLUMNS = [
    *common.SOURCE_COLUMNS,
    ("amount", "STRING"),
    ("event_time", "STRING"),
    ("score", "DOUBLE"),
    ("rules_score", "DOUBLE"),
    ("ml_score", "DOUBLE"),
    ("reasons", "STRING"),
    ("rules_version", "STRING"),
    ("model_version", "STRING"),
]
ALERT_KEY = common.SOURCE_KEY
SHADOW_COLUMNS = [
    *common.SOURCE_COLUMNS,
    ("event_time", "STRING"),
    ("live_action", "STRING"),
    ("live_score", "DOUBLE"),
    ("live_rules_version", "STRING"),
    ("live_model_version", "STRING"),
    ("shadow_action", "STRING"),
    ("shadow_score", "DOUBLE"),
    ("shadow_reasons", "STRING"),
    ("shadow_rules_version", "STRING"),
    ("shadow_model_version", "STRING"),
]
_encode = msgspec.json.Encoder().encode
FLUSH_EVERY = 128  # events between two updates of the Flink counters
LATENCY_SAMPLE = 16  # one decision in this many feeds the latency metric
# Upper bounds (ms, inclusive) of the decision-latency buckets: from the Kafka record's timestamp
# to the decision. Each is a cumulative Flink counter `decision_latency_le_<ms>` (Prometheus'
# histogram convention; `decision_latency_samples` is the +Inf bucket), so Prometheus computes
# the share of decisions over a bound and a p99 (config/monitoring/, ADR 0043).
LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_COUNTERS = tuple(f"decision_latency_le_{b}" for b in LATENCY_BUCKETS_MS)
STATE_CACHE = 200_000  # customers whose encoded state is kept in Python (~250 bytes each)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the detector refuses (becomes a dead letter at stage ``detect``)."""

    error_type: str
    message: str


class LatencyBuckets:
    """Sampled decision latencies, counted per bucket in Python between two flushes."""

    def __init__(self) -> None:
        self.pending = [0] * len(LATENCY_BUCKETS_MS)

    def observe(self, ms: int) -> None:
        i = bisect_left(LATENCY_BUCKETS_MS, ms)  # the first bound >= ms
        if i < len(self.pending):  # slower than the last bound: only in the +Inf count
            self.pending[i] += 1

    def flush(self, count: Mapping[str, Callable[[int], None]]) -> None:
        """Add what was observed to the cumulative counters: ``le_<b>`` gains every sample
        <= b (one Java call per bucket that changed)."""
        running = 0
        for name, n in zip(LATENCY_COUNTERS, self.pending, strict=True):
            running += n
            if running:
                count[name](running)
        self.pending = [0] * len(LATENCY_BUCKETS_MS)


def detect(
    detector: Detector, state: bytes | None, txn: Transaction, now_ms: int | None = None
) -> tuple[bytes | None, FraudDecision | Rejected, bool]:
    """THE call into the detector core for one event (state bytes in, state bytes out).

    Returns the customer's new state (None: keep the old one unchanged), the decision or a
    :class:`Rejected` that becomes a dead letter, and whether the decision is a duplicate's
    (the first decision of a transaction seen again: already published, not published twice).
    ``now_ms`` turns on the core's clock check (events too far ahead of processing time).
    """
    try:
        customer = decode_state(state) if state else CustomerState()
    except StateEncodingError as exc:
        return None, Rejected("state_unreadable", f"customer state: {exc}"), False
    detection = detector.process(customer, txn, now_ms)
    if detection.failure is not None:
        return None, Rejected(detection.failure.error_type, detection.failure.message), False
    assert detection.decision is not None
    if detection.duplicate:
        return None, detection.decision, True  # the state did not change
    return encode_state(customer), detection.decision, False


def parse_control(key: bytes | None, value: bytes | None) -> tuple[str, str, bool | None] | None:
    """A control record -> (kind, id, listed; None = remove the override), or None if it is not
    one (counted, ignored: a control topic is written by operators, not by traffic)."""
    if key is None:
        return None
    kind, sep, ident = bytes(key).decode("utf-8", errors="replace").partition(":")
    if not sep or kind not in ("customer", "store") or not ident or len(ident) > 128:
        return None
    if value is None:
        return kind, ident, None
    text = bytes(value).decode("utf-8", errors="replace").strip().lower()
    if text in ("true", "1", "listed", '{"listed": true}', '{"listed":true}'):
        return kind, ident, True
    if text in ("false", "0", "unlisted", '{"listed": false}', '{"listed":false}'):
        return kind, ident, False
    return None


def blacklist(
    base_customers: Sequence[str], base_stores: Sequence[str], overrides: Iterator[tuple[str, str]]
) -> tuple[set[str], set[str]]:
    """The effective blacklist: the rules file's lists with the control topic's overrides
    (``kind:id`` -> ``"true"``/``"false"``) applied."""
    customers, stores = set(base_customers), set(base_stores)
    for entry, listed in overrides:
        kind, _, ident = entry.partition(":")
        target = customers if kind == "customer" else stores
        if listed == "true":
            target.add(ident)
        else:
            target.discard(ident)
    return customers, stores


def _source(decision: FraudDecision, record: Any) -> tuple[Any, ...]:
    """The bronze key (the source record's Kafka topic, partition, offset) and the ids."""
    return (record[1], record[2], record[3], decision.transaction_id, decision.customer_id,
            decision.store_id)  # fmt: skip


def alert_row(decision: FraudDecision, record: Any) -> tuple[Any, ...]:
    return (
        *_source(decision, record),
        str(decision.amount),
        decision.event_time.isoformat(),
        decision.score,
        decision.rules_score,
        decision.ml_score,
        _encode(decision.reasons).decode("utf-8"),
        decision.rules_version,
        decision.model_version,
    )


def load_detector(args: JobArgs) -> Detector:
    """The live detector, carrying the shadow challenger when the job runs one."""
    from streamflow_jobs.model.loader import load_model  # noqa: PLC0415
    from streamflow_jobs.rules.config import RulesConfig  # noqa: PLC0415

    rules = RulesConfig.from_yaml(args.rules or RULES_PATH)
    model = load_model(args.model or MODEL_PATH)
    challenger = None
    if args.shadow_topic is not None:
        challenger = Detector(
            RulesConfig.from_yaml(args.shadow_rules) if args.shadow_rules else rules,
            load_model(args.shadow_model) if args.shadow_model else model,
        )
    return Detector(rules, model, shadow=challenger)


def shadow_verdict(
    challenger: Detector, state: bytes | None, txn: Transaction
) -> tuple[bytes | None, FraudDecision | None]:
    """The challenger's decision on ``txn`` from its own state bytes: (new state, decision).
    A challenger acts on nothing: an event it cannot decide (a conflict only its state sees)
    or a state it cannot read leaves it without a verdict, never fails the live path."""
    try:
        customer = decode_state(state) if state else CustomerState()
    except StateEncodingError:
        customer = CustomerState()  # start this customer again: the live state is untouched
    detection = challenger.process(customer, txn)
    if detection.decision is None:
        return None, None
    return (None if detection.duplicate else encode_state(customer)), detection.decision


def shadow_row(decision: FraudDecision, record: Any) -> tuple[Any, ...]:
    shadow = decision.shadow
    assert shadow is not None
    return (
        *_source(decision, record),
        decision.event_time.isoformat(),
        decision.action,
        decision.score,
        decision.rules_version,
        decision.model_version,
        shadow.action,
        shadow.score,
        _encode(shadow.reasons).decode("utf-8"),
        shadow.rules_version,
        shadow.model_version,
    )


DEAD_TAG = OutputTag("dead-letters", Types.STRING())
BRONZE_TAG = OutputTag("bronze-alerts", common.row_type(ALERT_COLUMNS))
SHADOW_TAG = OutputTag("shadow", Types.STRING())
SHADOW_BRONZE_TAG = OutputTag("bronze-shadow", common.row_type(SHADOW_COLUMNS))
CONTROL_STATE = MapStateDescriptor("blacklist-overrides", Types.STRING(), Types.STRING())


class StateCache:
    """Customer states in a ValueState, with a write-through copy of this subtask's: only
    this subtask changes them, and a restart starts a new, empty copy. Saves a Java call per
    event for known customers. Bytes are kept as a latin-1 STRING: ValueState of a byte array
    is broken in PyFlink 2.2.1 thread mode (MISSION.md); latin-1 maps each byte to one
    character and back."""

    def __init__(self, runtime_context: Any, name: str) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor(name, Types.STRING()))
        self.copy: dict[str, str] = {}

    def get(self, key: str) -> bytes | None:
        """The current key's state (``key`` is Flink's current key)."""
        stored = self.copy.get(key)
        if stored is None:
            stored = self.state.value()
        return stored.encode("latin-1") if stored is not None else None

    def put(self, key: str, data: bytes) -> None:
        text = data.decode("latin-1")
        self.state.update(text)
        if len(self.copy) >= STATE_CACHE:
            self.copy.clear()
        self.copy[key] = text


class _Detect:
    """The fraud-detector's function; two Flink flavours below (with and without control)."""

    def __init__(self, args: JobArgs, to_bronze: bool) -> None:
        self.args = args
        self.to_bronze = to_bronze

    def open(self, runtime_context: Any) -> None:
        install_gil_safe_walk()  # before the model's first score (see thread_mode.py)
        self.detector = load_detector(self.args)
        # The clock check (dead letter `timestamp_in_future`) runs only where the job says so:
        # production; `streamflow live` replays history and keeps it off.
        self.clock_check = self.args.max_clock_skew_seconds > 0
        self.detector.max_clock_skew_ms = self.args.max_clock_skew_seconds * 1000
        config = self.detector.rules.blacklist
        self.base_blacklist = (list(config.customers), list(config.stores))
        self.states = StateCache(runtime_context, "customer-state")
        self.metrics_context = runtime_context
        self.count = common.counters(
            runtime_context,
            ["events_in", "decisions", "alerts", "dead_letters", "invalid_skipped",
             "decision_latency_ms_sum", "decision_latency_samples", "control_records",
             "control_ignored", "duplicates", *LATENCY_COUNTERS],
        )  # fmt: skip
        self.latency = LatencyBuckets()
        self.per_code: dict[str, Any] = {}
        # The per-event counts are kept in Python and handed to Flink's counters every
        # FLUSH_EVERY events: each counter call crosses into Java (~1 us).
        self.pending_in = self.pending_decisions = self.latency_sum = self.latency_n = 0
        # The challenger's own per-customer state, beside the live one (same encoding).
        self.challenger = self.detector.shadow
        if self.challenger is not None:
            self.shadow_states = StateCache(runtime_context, "shadow-customer-state")

    def _counter(self, name: str) -> Any:
        counter = self.per_code.get(name)
        if counter is None:
            counter = self.per_code[name] = common.counters(self.metrics_context, [name])[name]
        return counter

    def flush_counts(self) -> None:
        count = self.count
        count["events_in"](self.pending_in)
        count["decisions"](self.pending_decisions)
        count["decision_latency_ms_sum"](self.latency_sum)
        count["decision_latency_samples"](self.latency_n)
        self.latency.flush(count)
        self.pending_in = self.pending_decisions = self.latency_sum = self.latency_n = 0

    def close(self) -> None:
        if hasattr(self, "count"):
            self.flush_counts()

    def handle(self, value: Any, key: str) -> Iterator[Any]:
        self.pending_in += 1
        if self.pending_in >= FLUSH_EVERY:
            self.flush_counts()
        record = value
        raw = record[0]
        parsed = common.parse(bytes(raw)) if raw is not None else None
        if parsed is None or isinstance(parsed, ParseFailure):
            self.count["invalid_skipped"](1)  # the transaction-processor dead-letters it
            return
        txn = parsed.transaction
        if txn.customer_id != key:
            message = f"the record's key {key!r} is not its customer_id {txn.customer_id!r}"
            yield from self._reject(Rejected("key_mismatch", message), raw, record)
            return
        now_ms = int(time.time() * 1000) if self.clock_check else None
        new_state, result, duplicate = detect(self.detector, self.states.get(key), txn, now_ms)
        if isinstance(result, Rejected):
            yield from self._reject(result, raw, record)
            return
        if new_state is not None:
            self.states.put(key, new_state)
        self.pending_decisions += 1
        if not self.pending_decisions % LATENCY_SAMPLE:  # reading the Instant is a Java call
            produced = common.epoch_ms(record[4])
            if produced:
                latency = max(0, int(time.time() * 1000) - produced)
                self.latency_sum += latency
                self.latency_n += 1
                self.latency.observe(latency)
        if duplicate:
            self.count["duplicates"](1)
            return
        if self.challenger is not None:
            yield from self._shadow(key, txn, result, record)
        if result.is_alert:
            self.count["alerts"](1)
            for reason in result.reasons:
                self._counter(f"alerts_{reason.code.replace('-', '_')}")(1)
            yield _encode(result).decode("utf-8")
            if self.to_bronze:
                yield BRONZE_TAG, Row(*alert_row(result, record))

    def _shadow(
        self, key: str, txn: Transaction, live: FraudDecision, record: Any
    ) -> Iterator[Any]:
        """The challenger's verdict beside ``live``: published when either side alerts."""
        assert self.challenger is not None
        new_state, verdict = shadow_verdict(self.challenger, self.shadow_states.get(key), txn)
        if new_state is not None:
            self.shadow_states.put(key, new_state)
        if verdict is None or not (live.is_alert or verdict.is_alert):
            return
        both = with_shadow(live, verdict)
        self._counter("shadow_alerts" if verdict.is_alert else "shadow_allows")(1)
        yield SHADOW_TAG, _encode(both).decode("utf-8")
        if self.to_bronze:
            yield SHADOW_BRONZE_TAG, Row(*shadow_row(both, record))

    def _reject(self, rejected: Rejected, raw: bytes, record: Any) -> Iterator[Any]:
        self.count["dead_letters"](1)
        self._counter(f"dead_letters_{rejected.error_type}")(1)
        letter = DeadLetter(
            error_type=rejected.error_type,
            error_message=rejected.message,
            stage="detect",
            source=SourceRef(kind="kafka", topic=record[1], partition=record[2], offset=record[3]),
            payload=bytes(raw)[:DEAD_LETTER_PAYLOAD_LIMIT].decode(
                "utf-8", errors="backslashreplace"
            ),
            payload_bytes=len(raw),
            payload_truncated=len(raw) > DEAD_LETTER_PAYLOAD_LIMIT,
            failed_at=datetime.now(UTC),
        )
        yield DEAD_TAG, common.encode_json(letter)


class DetectKeyed(_Detect, KeyedProcessFunction):  # type: ignore[misc]
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        yield from self.handle(value, ctx.get_current_key())


class DetectWithControl(_Detect, KeyedBroadcastProcessFunction):  # type: ignore[misc]
    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        self.applied = -1
        self.changes = 0  # bumped by every control record this subtask applies

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if self.applied != self.changes:
            # First event after a (re)start or a change: rebuild from the broadcast state
            # (restored with the checkpoint), so a restart keeps every override.
            overrides = list(ctx.get_broadcast_state(CONTROL_STATE).items())
            customers, stores = blacklist(*self.base_blacklist, iter(overrides))
            self.detector.evaluator.set_blacklist(customers, stores)
            self.applied = self.changes
        yield from self.handle(value, ctx.get_current_key())

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        self.count["control_records"](1)
        entry = parse_control(value[0], value[1])
        if entry is None:
            self.count["control_ignored"](1)
            return
        kind, ident, listed = entry
        state = ctx.get_broadcast_state(CONTROL_STATE)
        if listed is None:
            state.remove(f"{kind}:{ident}")
        else:
            state.put(f"{kind}:{ident}", "true" if listed else "false")
        self.changes += 1


def build(env: Any, t_env: Any, args: JobArgs, dsn: str | None) -> None:
    # Read the files at submission: a bad rules file or model fails the submission, not the
    # running job; every TaskManager then loads the same files.
    load_detector(args)
    source = keyed_source(t_env, args)
    if args.control_topic is None:
        decided = source.process(DetectKeyed(args, dsn is not None), output_type=Types.STRING())
    else:
        control = common.kafka_source(
            t_env, args, args.control_topic, JOB, name="control", starting="earliest"
        ).broadcast(CONTROL_STATE)
        decided = source.connect(control).process(
            DetectWithControl(args, dsn is not None), output_type=Types.STRING()
        )
    decided = decided.name("detect").uid("detect")
    decided.sink_to(common.kafka_sink(args, topic(args, "alerts_topic"), JOB, "alerts")).name(
        "alerts-to-kafka"
    ).uid("alerts-to-kafka")
    if args.shadow_topic is not None:
        decided.get_side_output(SHADOW_TAG).sink_to(
            common.kafka_sink(args, args.shadow_topic, JOB, "shadow")
        ).name("shadow-to-kafka").uid("shadow-to-kafka")
    if dsn is not None:
        common.jdbc_sink_table(
            t_env, "bronze_alerts", "bronze.fraud_alerts", ALERT_COLUMNS, ALERT_KEY, dsn
        )
        statements = t_env.create_statement_set()
        statements.add_insert(
            "bronze_alerts", t_env.from_data_stream(decided.get_side_output(BRONZE_TAG))
        )
        if args.shadow_topic is not None:
            common.jdbc_sink_table(
                t_env, "bronze_shadow", "bronze.shadow_decisions", SHADOW_COLUMNS, ALERT_KEY, dsn
            )
            statements.add_insert(
                "bronze_shadow", t_env.from_data_stream(decided.get_side_output(SHADOW_BRONZE_TAG))
            )
        statements.attach_as_datastream()
    from streamflow_jobs.flink.transaction_processor import dead_letters  # noqa: PLC0415

    dead_letters(decided.get_side_output(DEAD_TAG), args, dsn, JOB)


def keyed_source(t_env: Any, args: JobArgs) -> Any:
    """The transactions, keyed by customer on the Java side: ``Row(key, Row(value, topic,
    partition, offset, produced))``."""
    common.kafka_table(t_env, args, args.transactions_topic, JOB, name="transactions_raw")
    table = t_env.sql_query(
        "SELECT COALESCE(CAST(`k` AS STRING), "
        "JSON_VALUE(CAST(`v` AS STRING), '$.customer_id'), '') AS customer, "
        "ROW(`v`, `topic`, `partition`, `offset`, `produced`) AS rec FROM `transactions_raw`"
    )
    record_type = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(),
                             Types.LONG(), Types.INSTANT()])  # fmt: skip
    # A RowTypeInfo stream (the keyed Python operator refuses to_data_stream's ExternalTypeInfo).
    stream = t_env.to_append_stream(table, Types.ROW([Types.STRING(), record_type]))
    return common.key_by_first_field(stream, Types.STRING(), record_type)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, prog=JOB)
    env, t_env = common.environment(JOB)
    build(env, t_env, args, postgres_dsn())
    env.execute(f"streamflow-{JOB}")


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s: cloudpickle ships functions of
    # __main__ by value (with their globals), those of a module by reference.
    from streamflow_jobs.flink.fraud_detector import main as _main

    _main()
