"""realtime-aggregator: per store, event-time tumbling windows (1 min, 5 min, 1 h by default):
transaction count, amount sum and average, alert count -> the metrics topic.

Two inputs: the transactions topic (parsed by the core's parser; invalid records are the
transaction-processor's dead letters and are skipped here) and the alerts topic, read with
``read_committed`` (an alert counts once, when the fraud-detector's checkpoint commits it).
Each input has its own bounded-out-of-orderness watermark with idleness; the union's watermark
is the slower of the two, so a window waits for the alerts of its transactions.

A window is emitted when the watermark passes its end, and again (``revision`` + 1) for each
late event within ``--allowed-lateness-ms``; consumers keep the highest revision per
(store, window_seconds, window_start). Later events are counted in the ``late_events`` metric.
Amounts are summed in cents (integers): no float drift in the sums.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedProcessFunction, ProcessFunction
from pyflink.datastream.state import MapStateDescriptor

from streamflow_jobs.events import ParseFailure
from streamflow_jobs.flink import common
from streamflow_jobs.flink.args import JobArgs, parse_args, topic

JOB = "realtime-aggregator"
# (store, event time ms, amount in cents, transactions 0/1, alerts 0/1)
EVENT_TYPE = Types.ROW([Types.STRING(), Types.LONG(), Types.LONG(), Types.INT(), Types.INT()])
_decode_alert = msgspec.json.Decoder().decode
_CENT = Decimal("0.01")


def transaction_event(raw: bytes | None) -> tuple[str, int, int, int, int] | None:
    if raw is None:
        return None
    parsed = common.parse(bytes(raw))
    if isinstance(parsed, ParseFailure):
        return None
    t = parsed.transaction
    return t.store_id, epoch_ms(t.timestamp), int(t.amount * 100), 1, 0


def alert_event(raw: bytes | None) -> tuple[str, int, int, int, int] | None:
    """An alert (the fraud-detector's JSON) -> its store and its transaction's event time."""
    if raw is None:
        return None
    try:
        alert = _decode_alert(bytes(raw))
        when = datetime.fromisoformat(alert["event_time"])
        return str(alert["store_id"]), epoch_ms(when), 0, 0, 1
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None


def epoch_ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def window_start(ms: int, size_ms: int) -> int:
    return ms - ms % size_ms  # floor, also before 1970


def metric(store: str, size_s: int, start: int, totals: tuple[int, int, int], revision: int
           ) -> str:  # fmt: skip
    count, cents, alerts = totals
    total = (Decimal(cents) / 100).quantize(_CENT)
    return msgspec.json.encode(
        {
            "store_id": store,
            "window_seconds": size_s,
            "window_start": datetime.fromtimestamp(start / 1000, UTC).isoformat(),
            "window_end": datetime.fromtimestamp((start + size_s * 1000) / 1000, UTC).isoformat(),
            "transactions": count,
            "amount_sum": str(total),
            "amount_avg": str((total / count).quantize(_CENT)) if count else None,
            "alerts": alerts,
            "revision": revision,
        }
    ).decode("utf-8")


class ToEvent(ProcessFunction):  # type: ignore[misc]
    def __init__(self, alerts: bool) -> None:
        self.alerts = alerts

    def open(self, runtime_context: Any) -> None:
        self.count = common.counters(runtime_context, ["events_in", "unreadable"])

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count["events_in"](1)
        event = alert_event(value[1]) if self.alerts else transaction_event(value[1])
        if event is None:
            self.count["unreadable"](1)
            return
        yield Row(*event)


class EventTime(TimestampAssigner):  # type: ignore[misc]
    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return int(value[1])


class Windows(KeyedProcessFunction):  # type: ignore[misc]
    """All window sizes of one store in one MapState: ``"size:start" -> "count,cents,alerts,
    revision"``; one event-time timer per window end (and one per cleanup time)."""

    def __init__(self, sizes: Sequence[int], lateness_ms: int) -> None:
        self.sizes = [s * 1000 for s in sizes]
        self.lateness = lateness_ms

    def open(self, runtime_context: Any) -> None:
        self.windows = runtime_context.get_map_state(
            MapStateDescriptor("windows", Types.STRING(), Types.STRING())
        )
        self.count = common.counters(runtime_context, ["late_events", "windows_emitted"])

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        store, ms, cents, txns, alerts = value[0], value[1], value[2], value[3], value[4]
        timers = ctx.timer_service()
        watermark = timers.current_watermark()
        for size in self.sizes:
            start = window_start(ms, size)
            end = start + size
            if end - 1 + self.lateness < watermark:
                self.count["late_events"](1)
                continue
            key = f"{size}:{start}"
            old = self.windows.get(key)
            count, total, alert_count, revision = map(int, old.split(",")) if old else (0, 0, 0, 0)
            count, total, alert_count = count + txns, total + cents, alert_count + alerts
            if end - 1 <= watermark:  # already emitted: a late event updates it
                revision += 1
                yield metric(store, size // 1000, start, (count, total, alert_count), revision)
            else:
                timers.register_event_time_timer(end - 1)
            timers.register_event_time_timer(end - 1 + self.lateness)
            self.windows.put(key, f"{count},{total},{alert_count},{revision}")

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        store = ctx.get_current_key()
        for size in self.sizes:
            for end in (timestamp + 1, timestamp + 1 - self.lateness):
                start = end - size
                if start % size:
                    continue
                key = f"{size}:{start}"
                value = self.windows.get(key)
                if value is None:
                    continue
                count, total, alerts, revision = map(int, value.split(","))
                if end == timestamp + 1:
                    self.count["windows_emitted"](1)
                    yield metric(store, size // 1000, start, (count, total, alerts), revision)
                if end - 1 + self.lateness <= timestamp:
                    self.windows.remove(key)


def build(env: Any, t_env: Any, args: JobArgs) -> None:
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(args.max_out_of_orderness_ms)
        )
        .with_idleness(Duration.of_millis(max(args.idle_timeout_ms, 1)))
        .with_timestamp_assigner(EventTime())
    )
    streams = []
    for alerts, source_topic, name in (
        (False, args.transactions_topic, "transactions"),
        (True, topic(args, "alerts_topic"), "alerts"),
    ):
        source = common.kafka_source(t_env, args, source_topic, JOB, name=name)
        streams.append(
            source.process(ToEvent(alerts), output_type=EVENT_TYPE)
            .name(f"{name}-events")
            .uid(f"{name}-events")
            .assign_timestamps_and_watermarks(watermarks)
            .name(f"{name}-watermarks")
            .uid(f"{name}-watermarks")
        )
    (
        streams[0]
        .union(streams[1])
        .key_by(lambda e: e[0], key_type=Types.STRING())
        .process(Windows(args.windows, args.allowed_lateness_ms), output_type=Types.STRING())
        .name("windows")
        .uid("windows")
        .sink_to(common.kafka_sink(args, topic(args, "metrics_topic"), JOB, "metrics"))
        .name("metrics-to-kafka")
        .uid("metrics-to-kafka")
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, prog=JOB)
    env, t_env = common.environment(JOB)
    build(env, t_env, args)
    env.execute(f"streamflow-{JOB}")


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s: cloudpickle ships functions of
    # __main__ by value (with their globals), those of a module by reference.
    from streamflow_jobs.flink.realtime_aggregator import main as _main

    _main()
