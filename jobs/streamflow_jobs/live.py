"""``streamflow live``: a file of events through the real pipeline, Kafka -> Flink -> alerts.

1. the local infrastructure (started if not running; stopped again at the end if this run
   started it), and a fresh set of topics named after the run, so two runs never mix;
2. the three jobs, submitted to the local Flink cluster with ``flink run -pym`` and the same
   arguments a FlinkDeployment passes (:class:`~streamflow_jobs.flink.args.JobArgs`);
3. the file's non-empty lines produced in file order, keyed by ``customer_id`` (idempotent
   producer: a retry never duplicates or reorders); a line larger than the topic's maximum
   message size becomes a dead letter here (stage ``ingest``) and goes to the dead-letter topic;
4. wait until every line is accounted for: rows in ``bronze.transactions`` + dead letters =
   lines, and the fraud-detector has committed offsets past the last event;
5. stop the jobs with a savepoint (which commits their last Kafka transactions), then read the
   alerts and dead letters with ``read_committed``, write them and a summary.

Alerts are the same JSON objects as ``streamflow replay``'s decision lines; on the same file
``live`` raises the same alerts with the same scores (a test compares them).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from streamflow_jobs import infra
from streamflow_jobs.events import (
    DEAD_LETTER_PAYLOAD_LIMIT,
    ParseFailure,
    SourceRef,
)
from streamflow_jobs.flink import local
from streamflow_jobs.flink.args import JobArgs
from streamflow_jobs.flink.common import parse
from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH
from streamflow_jobs.replay import Skimmed, read_lines

# Kafka's default max.message.bytes is 1 MiB (+ record overhead): one event per message.
MAX_MESSAGE_BYTES = 1_000_000
PARTITIONS = 3
CHECKPOINT_INTERVAL = "2s"
# No progress for this long while waiting for the pipeline: report and stop.
STALL_SECONDS = 180.0


class LiveError(RuntimeError):
    """A run that cannot continue; the message is one line for the user."""


@dataclass
class LiveResult:
    run_id: str
    produced: int = 0
    blank_lines: int = 0
    ingest_dead_letters: int = 0
    bronze_transactions: int = 0
    dead_letters: int = 0
    alerts: int = 0
    # With a shadow challenger: its verdicts published (either side alerted), and how many of
    # them the challenger alerted on.
    shadow_verdicts: int = 0
    shadow_alerts: int = 0
    seconds: float = 0.0
    latencies_ms: list[int] = field(default_factory=list)
    alerts_by_rule: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    topics: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "run_id": self.run_id,
            "produced": self.produced,
            "blank_lines": self.blank_lines,
            "bronze_transactions": self.bronze_transactions,
            "dead_letters": self.dead_letters,
            "ingest_dead_letters": self.ingest_dead_letters,
            "alerts": self.alerts,
            "alerts_by_rule": dict(sorted(self.alerts_by_rule.items())),
            **(
                {"shadow": {"verdicts": self.shadow_verdicts, "alerts": self.shadow_alerts}}
                if "shadow" in self.topics
                else {}
            ),
            "errors": dict(sorted(self.errors.items())),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.produced / self.seconds) if self.seconds else None,
            "decision_latency_ms": {
                "measured_on": "alerts (produce -> appended to the alerts topic)",
                "count": len(lat),
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else None,
            },
            "topics": self.topics,
        }


def percentile(values: list[int], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, min(len(values), math.ceil(q * len(values) / 100)))
    return float(values[rank - 1])


def topics_for(run_id: str, shadow: bool = False) -> dict[str, str]:
    topics = {
        "transactions": f"{run_id}.transactions",
        "alerts": f"{run_id}.alerts",
        "metrics": f"{run_id}.metrics",
        "dead-letters": f"{run_id}.dead-letters",
    }
    if shadow:
        topics["shadow"] = f"{run_id}.shadow"
    return topics


def create_run_topics(bootstrap: str, topics: dict[str, str]) -> None:
    infra.create_topics(
        bootstrap,
        dict.fromkeys(topics.values(), PARTITIONS),
        config={
            # The alert's append time is what "readable" means for the latency figure.
            topics["alerts"]: {"message.timestamp.type": "LogAppendTime"},
        },
    )


def job_args(bootstrap: str, topics: dict[str, str], run_id: str, rules: Path,
             model: Path, shadow_rules: Path | None = None,
             shadow_model: Path | None = None) -> JobArgs:  # fmt: skip
    return JobArgs.for_topics(
        bootstrap,
        topics,
        rules=str(rules),
        model=str(model),
        shadow_rules=str(shadow_rules) if shadow_rules else None,
        shadow_model=str(shadow_model) if shadow_model else None,
        group_id=run_id,
        starting_offsets="earliest",
        # A file replays history: no clock check, and windows wait for the slowest partition.
        max_clock_skew_seconds=0,
    )


def ingest_letter(head: bytes, size: int, line: int, path: str) -> bytes:
    """A line too large for Kafka: a dead letter at the producer (stage ``ingest``)."""
    cut = head[:DEAD_LETTER_PAYLOAD_LIMIT]
    return orjson.dumps(
        {
            "error_type": "payload_too_large",
            "error_message": f"line is {size} bytes; a Kafka message holds at most "
            f"{MAX_MESSAGE_BYTES} bytes",
            "stage": "ingest",
            "source": msgspec.to_builtins(SourceRef(kind="file", path=path, line=line)),
            "payload": cut.decode("utf-8", errors="backslashreplace"),
            "payload_bytes": size,
            "payload_truncated": size > len(cut),
            "failed_at": datetime.now(UTC).isoformat(),
        }
    )


class Producer:
    """Produces a file's lines in order, keyed by customer id, optionally at a fixed rate."""

    def __init__(self, bootstrap: str, topics: dict[str, str], rate: float | None) -> None:
        from confluent_kafka import Producer as KafkaProducer  # noqa: PLC0415

        self.topics = topics
        self.rate = rate
        self.errors: list[str] = []
        self.produced_at: dict[str, int] = {}
        self.producer = KafkaProducer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # retries never duplicate or reorder
                "linger.ms": 2,
                "compression.type": "lz4",
                "message.max.bytes": MAX_MESSAGE_BYTES + 4096,
            }
        )

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self, path: Path, result: LiveResult, stop: threading.Event,
            progress: Callable[[int], None] | None = None) -> None:  # fmt: skip
        produce, poll = self.producer.produce, self.producer.poll
        transactions = self.topics["transactions"]
        started = time.monotonic()
        path_text = str(path)
        with path.open("rb") as stream:
            lines = chain.from_iterable(read_lines(stream, max_line=MAX_MESSAGE_BYTES))
            for line_no, raw in enumerate(lines, start=1):
                if stop.is_set():
                    raise KeyboardInterrupt
                if type(raw) is Skimmed:
                    produce(self.topics["dead-letters"],
                            ingest_letter(raw, raw.size, line_no, path_text),
                            on_delivery=self._delivered)  # fmt: skip
                    result.ingest_dead_letters += 1
                    continue
                if not raw or raw.isspace():
                    result.blank_lines += 1
                    continue
                parsed = parse(raw)
                key = None
                if not isinstance(parsed, ParseFailure):
                    key = parsed.transaction.customer_id.encode("utf-8")
                    self.produced_at[parsed.transaction.transaction_id] = (
                        time.time_ns() // 1_000_000
                    )
                while True:
                    try:
                        produce(transactions, raw, key=key, on_delivery=self._delivered)
                        break
                    except BufferError:
                        poll(0.05)  # the local queue is full: let deliveries drain
                result.produced += 1
                if result.produced % 1000 == 0:
                    poll(0)
                    if progress is not None:
                        progress(result.produced)
                    if self.rate:
                        ahead = result.produced / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                elif self.rate and result.produced % 50 == 0:
                    ahead = result.produced / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        left = self.producer.flush(60) or 0
        if left or self.errors:
            raise LiveError(f"Kafka refused {left + len(self.errors)} records: "
                            f"{(self.errors or ['timeout'])[0]}")  # fmt: skip
        if progress is not None:
            progress(result.produced)


def accounted(dsn: str, topic: str) -> tuple[int, int]:
    """(bronze rows, dead letters of the transaction-processor) for ``topic``."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM bronze.transactions WHERE kafka_topic = %s", (topic,)
        ).fetchone()
        dead = conn.execute(
            "SELECT count(*) FROM bronze.dead_letters WHERE kafka_topic = %s "
            "AND stage IN ('parse', 'validate', 'sink')",
            (topic,),
        ).fetchone()
    return int(rows[0] if rows else 0), int(dead[0] if dead else 0)


def _coordinator_not_ready() -> frozenset[int]:
    from confluent_kafka import KafkaError  # noqa: PLC0415

    return frozenset(
        {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
        }
    )


_COORDINATOR_NOT_READY = _coordinator_not_ready()


def committed_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Events of ``topic`` the consumer group has not committed yet (Flink commits its
    offsets when a checkpoint completes); None while the broker cannot say (its group
    coordinator is loading or moving: a retriable error)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            error = exc.args[0]
            if error.retriable() or error.code() in _COORDINATOR_NOT_READY:
                return None
            raise
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                     timeout=10)  # fmt: skip
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, group: str) -> Iterator[Any]:
    """Every committed record of ``topic`` (read_committed), from the start to the end."""
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in metadata.topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done = {p for p, high in ends.items() if high == 0}
        idle_since = time.monotonic()
        while len(done) < len(ends):
            msg = consumer.poll(0.5)
            if msg is None:
                # Positions can stop short of the high watermark (transaction markers):
                # the partition is done when the consumer's position reaches it.
                positions = consumer.position([TopicPartition(topic, p) for p in ends])
                for tp in positions:
                    if tp.offset >= ends[tp.partition]:
                        done.add(tp.partition)
                if time.monotonic() - idle_since > 30:
                    raise LiveError(f"could not read {topic} to its end (open transaction?)")
                continue
            if msg.error():
                continue
            idle_since = time.monotonic()
            offset, partition = msg.offset() or 0, msg.partition() or 0
            if offset + 1 >= ends[partition]:
                done.add(partition)
            yield msg
    finally:
        consumer.close()


def run(
    *,
    input_path: Path,
    alerts_path: Path,
    dlq_path: Path | None,
    summary_path: Path | None,
    rules_path: Path | None,
    model_path: Path | None,
    rate: float | None,
    console: Any = None,
    infrastructure: dict[str, Any] | None = None,
    shadow_rules: Path | None = None,
    shadow_model: Path | None = None,
    shadow_path: Path | None = None,
) -> LiveResult:
    """The whole ``streamflow live``; see the module's docstring. ``infrastructure``: a state
    like ``streamflow infra status --json`` prints, used as it is (tests); default: start the
    local infrastructure if needed."""
    from streamflow_jobs.flink.fraud_detector import load_detector  # noqa: PLC0415

    if not input_path.is_file():
        raise LiveError(f"input file not found: {input_path}")
    rules = rules_path.resolve() if rules_path else _default_rules()
    model = (model_path or DEFAULT_MODEL_PATH).resolve()
    run_id = f"live-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    shadowed = shadow_rules is not None or shadow_model is not None
    if shadowed != (shadow_path is not None):
        raise LiveError("a shadow run needs --shadow-output and --shadow-rules/--shadow-model")
    shadow_rules = shadow_rules.resolve() if shadow_rules else None
    shadow_model = shadow_model.resolve() if shadow_model else None
    topics = topics_for(run_id, shadow=shadowed)
    result = LiveResult(run_id, topics=topics)
    say: Callable[[str], None] = console.print if console is not None else (lambda text: None)
    try:
        load_detector(
            job_args("127.0.0.1:1", topics, run_id, rules, model, shadow_rules, shadow_model)
        )
    except (OSError, ValueError) as exc:
        raise LiveError(f"rules or model not usable: {exc}") from exc
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    submitted: list[local.Submitted] = []
    cluster = None
    with contextlib.ExitStack() as stack:
        try:
            say("starting the local infrastructure (if needed)")
            # Tests hand in their own session's infrastructure; users get .infra/'s.
            state = infrastructure or stack.enter_context(infra.running())
            cluster = infra.flink_cluster(state)
            ensure_slots(cluster, 3)
            bootstrap, dsn = state["kafka"]["bootstrap"], state["postgres"]["dsn"]
            create_run_topics(bootstrap, topics)
            args = job_args(bootstrap, topics, run_id, rules, model, shadow_rules, shadow_model)
            say(f"run {run_id}: submitting the three jobs")
            config = {"execution.checkpointing.interval": CHECKPOINT_INTERVAL}
            with ThreadPoolExecutor(3) as pool:
                futures = [
                    pool.submit(local.submit, cluster, job, args, dsn=dsn, config=config)
                    for job in local.MODULES
                ]
                for future in futures:
                    submitted.append(future.result())
            for job in submitted:
                local.wait_running(cluster, job.job_id)
            _check_stop(stop)
            say(f"producing {input_path}")
            started = time.monotonic()
            producer = Producer(bootstrap, topics, rate)
            producer.run(input_path, result, stop)
            say(f"produced {result.produced} events; waiting for the pipeline")
            wait_accounted(cluster, submitted, dsn, bootstrap, args, result, stop, say)
            result.seconds = time.monotonic() - started
            for job in submitted:
                local.stop_with_savepoint(cluster, job.job_id)
            submitted.clear()
            write_outputs(bootstrap, topics, run_id, alerts_path, dlq_path, result,
                          producer.produced_at, shadow_path)  # fmt: skip
            infra.delete_topics(bootstrap, list(topics.values()))
        except KeyboardInterrupt as exc:
            raise LiveError("interrupted: stopped the jobs and what this run started") from exc
        except infra.InfraError as exc:
            raise LiveError(str(exc)) from exc
        finally:
            if cluster is not None:
                for job in submitted:
                    with contextlib.suppress(Exception):
                        local.cancel(cluster, job.job_id)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous)
    if summary_path is not None:
        _write_atomic(summary_path, orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    return result


def _default_rules() -> Path:
    """The default RulesConfig as a file (the jobs read rules from a file, as in Kubernetes)."""
    from streamflow_jobs.rules.config import RulesConfig  # noqa: PLC0415

    path = infra.infra_dir() / "default-rules.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = RulesConfig().to_yaml()
    if not path.is_file() or path.read_text("utf-8") != text:
        _write_atomic(path, text.encode("utf-8"))
    return path


def ensure_slots(cluster: infra.FlinkCluster, needed: int) -> None:
    """At least ``needed`` free slots (the three jobs): start TaskManagers if short."""
    overview = cluster.overview()
    free = int(overview.get("slots-available", 0))
    while free < needed:
        cluster.start_taskmanager()
        free += cluster.slots
        cluster.wait_taskmanagers(len(cluster.taskmanager_pids))
    state = infra.read_state()
    if state is not None and "flink" in state:
        state["flink"] = infra.flink_state(cluster)
        infra.write_state(state)


def _check_stop(stop: threading.Event) -> None:
    if stop.is_set():
        raise KeyboardInterrupt


def wait_accounted(cluster: infra.FlinkCluster, jobs: list[local.Submitted], dsn: str,
                   bootstrap: str, args: JobArgs, result: LiveResult, stop: threading.Event,
                   say: Callable[[str], None]) -> None:  # fmt: skip
    """Until bronze rows + dead letters = produced lines and the fraud-detector has committed
    every event; fail if a job fails or nothing moves for STALL_SECONDS."""
    expected = result.produced
    last: tuple[int, int] = (-1, -1)
    last_change, last_report = time.monotonic(), 0.0
    detector_group = args.group("fraud-detector")
    while True:
        _check_stop(stop)
        rows, dead = accounted(dsn, args.transactions_topic)
        lag = committed_lag(bootstrap, detector_group, args.transactions_topic)
        done = rows + dead
        if done >= expected and lag == 0:
            result.bronze_transactions, result.dead_letters = rows, dead
            return
        now = time.monotonic()
        if (done, lag or 0) != last:
            last, last_change = (done, lag or 0), now
        elif now - last_change > STALL_SECONDS:
            raise LiveError(f"no progress for {STALL_SECONDS:.0f} s: {done}/{expected} lines "
                            f"accounted for, detector lag {lag}")  # fmt: skip
        if now - last_report > 5:
            last_report = now
            say(f"  {done}/{expected} lines accounted for (bronze {rows}, dead letters "
                f"{dead}); fraud-detector lag {lag}")  # fmt: skip
        for job in jobs:
            state = local.job_info(cluster, job.job_id).get("state")
            if state in ("FAILED", "CANCELED", "FINISHED"):
                cause = local.exception(cluster, job.job_id)
                raise LiveError(f"{job.job} is {state}: {cause}")
        time.sleep(0.5)


def write_outputs(bootstrap: str, topics: dict[str, str], run_id: str, alerts_path: Path,
                  dlq_path: Path | None, result: LiveResult, produced_at: dict[str, int],
                  shadow_path: Path | None = None) -> None:  # fmt: skip
    seen: set[str] = set()
    with _atomic(alerts_path) as out:
        for msg in read_topic(bootstrap, topics["alerts"], f"{run_id}.reader"):
            alert = orjson.loads(msg.value())
            tid = alert["transaction_id"]
            if tid in seen:
                raise LiveError(f"alert for {tid} read twice: exactly-once was broken")
            seen.add(tid)
            out.write(msg.value() + b"\n")
            result.alerts += 1
            for reason in alert.get("reasons", []):
                result.alerts_by_rule[reason["code"]] += 1
            sent = produced_at.get(tid)
            appended = msg.timestamp()[1]
            if sent is not None and appended > 0:
                result.latencies_ms.append(max(0, appended - sent))
    dead_out = _atomic(dlq_path) if dlq_path is not None else contextlib.nullcontext(None)
    with dead_out as dead:
        for msg in read_topic(bootstrap, topics["dead-letters"], f"{run_id}.reader-dlq"):
            letter = orjson.loads(msg.value())
            result.errors[letter["error_type"]] += 1
            if dead is not None:
                dead.write(msg.value() + b"\n")
    result.dead_letters += result.ingest_dead_letters
    if shadow_path is not None:
        with _atomic(shadow_path) as out:
            for msg in read_topic(bootstrap, topics["shadow"], f"{run_id}.reader-shadow"):
                out.write(msg.value() + b"\n")
                result.shadow_verdicts += 1
                result.shadow_alerts += bool(orjson.loads(msg.value())["shadow"]["is_alert"])


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    """Write to a temporary file beside ``path``; rename into place only when complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    with _atomic(path) as f:
        f.write(data)


def print_summary(result: LiveResult, out: Any) -> None:
    s = result.to_dict()
    lat = s["decision_latency_ms"]
    out.print(f"[bold]live[/] run {s['run_id']}: {s['produced']} events in {s['seconds']} s "
              f"({s['events_per_second'] or 0:,} events/s end to end)")  # fmt: skip
    out.print(f"  bronze rows {s['bronze_transactions']:>10}   dead letters {s['dead_letters']}"
              f"  {s['errors'] or ''}")  # fmt: skip
    out.print(f"  alerts      {s['alerts']:>10}   by rule {s['alerts_by_rule']}")
    if "shadow" in s:
        out.print(f"  shadow      {s['shadow']['verdicts']:>10}   verdicts published, "
                  f"{s['shadow']['alerts']} of them challenger alerts")  # fmt: skip
    out.print(f"  decision latency (produce -> alert appended): p50 {lat['p50']} ms, "
              f"p99 {lat['p99']} ms over {lat['count']} alerts")  # fmt: skip
