"""The streaming data plane on real components: Kafka, PostgreSQL, a Flink session cluster.

Every job is submitted with `flink run -pym streamflow_jobs.flink.<job>` (the FlinkDeployments'
entry point). References are the core's own results: `streamflow replay` for `live`, and the
core's per-event loop (the fraud-detector's one call, `detect`) where a test changes rules or
restores state midway.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import psycopg
import pytest
import yaml
from confluent_kafka import Producer

from streamflow_jobs import infra
from streamflow_jobs.detector import Detector
from streamflow_jobs.events import parse_transaction
from streamflow_jobs.flink import local
from streamflow_jobs.flink.args import JobArgs
from streamflow_jobs.flink.fraud_detector import detect
from streamflow_jobs.generator import Generator, GeneratorConfig
from streamflow_jobs.live import committed_lag, read_topic, run
from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState

pytestmark = pytest.mark.integration
CHECKPOINTS = {"execution.checkpointing.interval": "1s"}
MALFORMED_LINES = [
    b"not json",
    b'{"transaction_id": "t1"',
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"transaction_id": "\xff", "customer_id": "c", "store_id": "s"}',
    b'{"transaction_id": "m1", "customer_id": "c", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00Z"}',
    b'{"transaction_id": "m2", "customer_id": "c", "store_id": "s", "amount": -5, '
    b'"timestamp": "2026-01-05T10:00:00Z"}',
    b'{"transaction_id": "m3", "customer_id": "c", "store_id": "s", "amount": "1.234", '
    b'"timestamp": "2026-01-05T10:00:00Z"}',
    b'{"transaction_id": "m4", "customer_id": "c", "store_id": "s", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00"}',
    b'{"transaction_id": "m5", "customer_id": "c", "store_id": "s", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00Z", "latitude": 91}',
    b'{"transaction_id": "m6", "customer_id": " ", "store_id": "s", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00Z"}',
    b'{"transaction_id": "m7", "customer_id": "c", "store_id": "s", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00Z", "currency": "brl"}',
    b'{"transaction_id": "m8", "customer_id": "c", "store_id": "s", "amount": 1, '
    b'"timestamp": "2026-01-05T10:00:00Z", "schema_version": "two"}',
    b'{"big": "' + b"a" * 100_000 + b'"}',  # too large for an event, fits in Kafka
    b'{"huge": "' + b"a" * 1_200_000 + b'"}',  # too large for a Kafka message: ingest
]


def generated(events: int, seed: int, customers: int = 150) -> list[bytes]:
    gen = Generator(GeneratorConfig(events=events, seed=seed, customers=customers))
    return [orjson.dumps(event) for event, _ in gen.generate()]


def with_versions(lines: list[bytes]) -> list[bytes]:
    """Every 50th event as schema v1 (no payment method), every 70th as a newer v3."""
    out = []
    for i, line in enumerate(lines):
        event = orjson.loads(line)
        if i % 50 == 7:
            event.pop("payment_method", None)
            event["schema_version"] = 1
        elif i % 70 == 9:
            event["schema_version"] = 3
            event["loyalty_tier"] = "gold"
        out.append(orjson.dumps(event))
    return out


def fresh_topics(bootstrap: str) -> tuple[str, dict[str, str]]:
    run_id = f"t{secrets.token_hex(4)}"
    topics = {k: f"{run_id}.{k}" for k in ("transactions", "alerts", "metrics", "dead-letters")}
    topics["control"] = f"{run_id}.control"
    infra.create_topics(
        bootstrap,
        dict.fromkeys(topics.values(), 3),
        config={topics["control"]: {"cleanup.policy": "compact"}},
    )
    return run_id, topics


def job_args(bootstrap: str, run_id: str, topics: dict[str, str], rules: Path,
             control: bool = False) -> JobArgs:  # fmt: skip
    return JobArgs.for_topics(
        bootstrap,
        topics,
        rules=str(rules),
        model=str(DEFAULT_MODEL_PATH),
        control_topic=topics["control"] if control else None,
        group_id=run_id,
        starting_offsets="earliest",
    )


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for line in lines:
        parsed = parse_transaction(line)
        key = None if not hasattr(parsed, "transaction") else parsed.transaction.customer_id
        producer.produce(topic, line, key=key)
    assert producer.flush(60) == 0


def wait_processed(cluster: infra.FlinkCluster, job_id: str, bootstrap: str, group: str,
                   topic: str, timeout: float = 300) -> None:  # fmt: skip
    """Until the job has committed offsets past every record (a checkpoint covered them)."""
    deadline = time.monotonic() + timeout
    while committed_lag(bootstrap, group, topic) != 0:  # None: the broker cannot say yet
        state = local.job_info(cluster, job_id)["state"]
        assert state not in ("FAILED", "CANCELED"), local.exception(cluster, job_id)
        assert time.monotonic() < deadline, "the job did not catch up"
        time.sleep(0.5)


def alerts_of(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_topic(bootstrap, topic, f"r{time.time_ns()}")]


def reference(lines: list[bytes], phases: list[tuple[int, Detector]]) -> list[dict[str, Any]]:
    """The core's per-event loop (what the job computes), switching detectors at the given
    line indexes, state carried over: the expected alerts, in order."""
    states: dict[str, bytes] = {}
    out = []
    for i, line in enumerate(lines):
        detector = [d for start, d in phases if start <= i][-1]
        parsed = parse_transaction(line)
        if not hasattr(parsed, "transaction"):
            continue
        txn = parsed.transaction
        state, decision, duplicate = detect(detector, states.get(txn.customer_id), txn)
        if duplicate:
            continue  # published once, with the first copy
        assert state is not None
        states[txn.customer_id] = state
        if decision.is_alert:  # type: ignore[union-attr]
            out.append(orjson.loads(msgspec.json.encode(decision)))
    return out


def by_id(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = [a["transaction_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was published twice"
    return {a["transaction_id"]: a for a in alerts}


@pytest.fixture
def rules_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rules.yaml"
    path.write_text(RulesConfig(version="it").to_yaml())
    yield path


def test_live_raises_exactly_replays_alerts_and_accounts_for_every_line(
    streaming: dict[str, Any], tmp_path: Path, rules_file: Path
) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from streamflow_jobs.cli import app  # noqa: PLC0415

    events = with_versions(generated(4000, seed=11))
    source = tmp_path / "tx.jsonl"
    source.write_bytes(b"\n".join(events + MALFORMED_LINES + [b"", b"   "]) + b"\n")
    reference_file = tmp_path / "valid.jsonl"  # replay stops at the invalid UTF-8 line today
    reference_file.write_bytes(b"\n".join(events) + b"\n")
    decisions = tmp_path / "decisions.jsonl"
    replayed = CliRunner().invoke(
        app, ["replay", "-i", str(reference_file), "-o", str(decisions), "--rules", str(rules_file)]
    )
    assert replayed.exit_code == 0, replayed.output
    expected = [orjson.loads(x) for x in decisions.read_bytes().splitlines()]
    expected = [d for d in expected if d["is_alert"]]

    alerts, dlq, summary = tmp_path / "alerts.jsonl", tmp_path / "dlq.jsonl", tmp_path / "s.json"
    result = run(
        input_path=source, alerts_path=alerts, dlq_path=dlq, summary_path=summary,
        rules_path=rules_file, model_path=None, rate=None, infrastructure=streaming,
    )  # fmt: skip
    s = orjson.loads(summary.read_bytes())
    lines = len(events) + len(MALFORMED_LINES)
    assert s["produced"] == lines - 1  # the huge line never reached Kafka
    assert s["bronze_transactions"] == len(events)
    assert s["bronze_transactions"] + s["dead_letters"] == lines
    assert s["alerts"] == len(expected) > 10
    assert s["decision_latency_ms"]["p50"] is not None and s["events_per_second"] > 0
    got = by_id([orjson.loads(x) for x in alerts.read_bytes().splitlines()])  # none twice
    rules = RulesConfig.from_yaml(rules_file)
    assert got == by_id(reference(events, [(0, Detector(rules, load_model()))]))
    # ... and replay's batch path decides the same, bit for bit (issue 11 makes its float
    # operations those of the per-event path; until then the last bit of a score can differ).
    assert got == by_id(expected)

    letters = [orjson.loads(x) for x in dlq.read_bytes().splitlines()]
    assert len(letters) == len(MALFORMED_LINES)
    # One dead letter per malformed line (>= 12 kinds), each telling its own error.
    assert len({(d["error_type"], d["error_message"]) for d in letters}) == len(letters) >= 12
    topic = result.topics["transactions"]
    for letter in letters:
        if letter["stage"] == "ingest":
            assert letter["source"]["kind"] == "file" and letter["payload_bytes"] > 1_000_000
            continue
        assert letter["source"]["topic"] == topic and letter["source"]["offset"] >= 0
        assert len(letter["payload"].encode()) <= 10 * 1024 * 4
    with psycopg.connect(streaming["postgres"]["dsn"]) as conn:
        rows = conn.execute(
            "SELECT error_type, stage, kafka_partition, kafka_offset, payload_truncated "
            "FROM bronze.dead_letters WHERE kafka_topic = %s",
            (topic,),
        ).fetchall()
        versions = dict(
            conn.execute(
                "SELECT schema_version, count(*) FROM bronze.transactions "
                "WHERE kafka_topic = %s GROUP BY 1",
                (topic,),
            ).fetchall()
        )
        stored_alerts = conn.execute(
            "SELECT count(DISTINCT transaction_id), count(*) FROM bronze.fraud_alerts "
            "WHERE kafka_topic = %s",
            (topic,),
        ).fetchone()
    assert len(rows) == len(MALFORMED_LINES) - 1
    assert {r[0] for r in rows} >= {"invalid_json", "not_an_object", "invalid_encoding",
                                   "validation_error", "payload_too_large"}  # fmt: skip
    assert any(r[4] for r in rows)  # the 100 KB line: kept cut at 10 KiB
    assert set(versions) == {1, 2, 3}
    assert stored_alerts == (len(expected), len(expected))


def test_live_runs_a_shadow_challenger_beside_the_live_detector(
    streaming: dict[str, Any], tmp_path: Path, rules_file: Path
) -> None:
    """`streamflow live --shadow-rules`: the live alerts are exactly those without a shadow;
    the challenger's verdicts (where either side alerted) are exactly the core's, in a topic
    and in bronze."""
    events = generated(3000, seed=13, customers=120)
    source = tmp_path / "tx.jsonl"
    source.write_bytes(b"\n".join(events) + b"\n")
    candidate = RulesConfig.model_validate(
        {"version": "challenger", "alert_threshold": 0.5, "velocity": {"max_count": 3}}
    )
    candidate_file = tmp_path / "candidate.yaml"
    candidate_file.write_text(candidate.to_yaml())
    alerts, shadow, summary = tmp_path / "alerts.jsonl", tmp_path / "shadow.jsonl", tmp_path / "s"
    result = run(
        input_path=source, alerts_path=alerts, dlq_path=None, summary_path=summary,
        rules_path=rules_file, model_path=None, rate=None, infrastructure=streaming,
        shadow_rules=candidate_file, shadow_path=shadow,
    )  # fmt: skip
    model = load_model()
    live_rules = RulesConfig.from_yaml(rules_file)
    got = by_id([orjson.loads(x) for x in alerts.read_bytes().splitlines()])
    assert got == by_id(reference(events, [(0, Detector(live_rules, model))]))  # no shadow field
    states: dict[str, Any] = {}
    shadows: dict[str, Any] = {}
    detector = Detector(live_rules, model, shadow=Detector(candidate, model))
    expected = []
    for line in events:
        txn = parse_transaction(line).transaction  # type: ignore[union-attr]
        d = detector.process(
            states.setdefault(txn.customer_id, CustomerState()),
            txn,
            shadow_state=shadows.setdefault(txn.customer_id, CustomerState()),
        )
        decision = d.decision
        assert decision is not None and decision.shadow is not None and not d.duplicate
        if decision.is_alert or decision.shadow.is_alert:
            expected.append(orjson.loads(msgspec.json.encode(decision)))
    verdicts = by_id([orjson.loads(x) for x in shadow.read_bytes().splitlines()])
    assert verdicts == by_id(expected)
    assert any(v["shadow"]["is_alert"] and not v["is_alert"] for v in verdicts.values())
    s = orjson.loads(summary.read_bytes())
    assert s["shadow"] == {
        "verdicts": len(expected),
        "alerts": sum(v["shadow"]["is_alert"] for v in expected),
    }
    with psycopg.connect(streaming["postgres"]["dsn"]) as conn:
        rows = conn.execute(
            "SELECT transaction_id, live_action, shadow_action, shadow_rules_version "
            "FROM bronze.shadow_decisions WHERE kafka_topic = %s",
            (result.topics["transactions"],),
        ).fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        t: (v["action"], v["shadow"]["action"]) for t, v in verdicts.items()
    }
    assert {r[3] for r in rows} == {candidate.content_version}


def test_a_killed_taskmanager_loses_and_duplicates_nothing(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster, rules_file: Path
) -> None:
    bootstrap, dsn = streaming["kafka"]["bootstrap"], streaming["postgres"]["dsn"]
    run_id, topics = fresh_topics(bootstrap)
    args = job_args(bootstrap, run_id, topics, rules_file)
    lines = generated(6000, seed=21, customers=120)
    first, second = lines[:3000], lines[3000:]
    job = local.submit(flink_cluster, "fraud-detector", args, dsn=dsn, config=CHECKPOINTS)
    local.wait_running(flink_cluster, job.job_id)
    produce(bootstrap, topics["transactions"], first)
    checkpoint = local.wait_checkpoint(flink_cluster, job.job_id)
    # Kill the TaskManager running the detector: no cancel, no final checkpoint.
    vertices = local.job_info(flink_cluster, job.job_id)["vertices"]
    vertex = next(v["id"] for v in vertices if v["name"].startswith("detect"))
    placed = infra.rest_json(
        f"{flink_cluster.rest}/jobs/{job.job_id}/vertices/{vertex}/taskmanagers"
    )["taskmanagers"]
    victim = flink_cluster.taskmanager_pid(placed[0]["taskmanager-id"])
    os.kill(victim, signal.SIGKILL)
    flink_cluster.start_taskmanager()  # a replacement, as Kubernetes would start one
    produce(bootstrap, topics["transactions"], second)
    wait_processed(flink_cluster, job.job_id, bootstrap, args.group("fraud-detector"),
                   topics["transactions"])  # fmt: skip
    local.stop_with_savepoint(flink_cluster, job.job_id)
    assert checkpoint >= 1
    got = by_id(alerts_of(bootstrap, topics["alerts"]))
    detector = Detector(RulesConfig.from_yaml(rules_file), load_model())
    expected = by_id(reference(lines, [(0, detector)]))
    assert got == expected  # nothing lost, nothing twice (read_committed)
    after_kill = {orjson.loads(x)["transaction_id"] for x in second}
    history = [a for t, a in got.items() if t in after_kill and
               any(r["code"] in ("FR-001", "FR-004") for r in a["reasons"])]  # fmt: skip
    assert history, "an alert that needs history from before the kill"
    with psycopg.connect(dsn) as conn:
        distinct, total = conn.execute(
            "SELECT count(DISTINCT transaction_id), count(*) FROM bronze.fraud_alerts "
            "WHERE kafka_topic = %s",
            (topics["transactions"],),
        ).fetchone() or (0, 0)
    assert distinct == total == len(expected)


def _event(customer: str, n: int, store: str = "S01") -> bytes:
    return orjson.dumps(
        {
            "transaction_id": f"{customer}-{n}",
            "customer_id": customer,
            "store_id": store,
            "amount": "50.00",
            "timestamp": f"2026-01-{1 + n:02d}T12:00:00-03:00",
            "latitude": -23.55,
            "longitude": -46.63,
            "payment_method": "credit_card",
        }
    )


def wait_metric(cluster: infra.FlinkCluster, job_id: str, name: str, at_least: float,
                timeout: float = 60) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while local.metrics(cluster, job_id, [name])[name] < at_least:
        assert time.monotonic() < deadline, f"metric {name} never reached {at_least}"
        time.sleep(0.5)


def test_a_blacklist_change_applies_without_a_restart(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster, rules_file: Path
) -> None:
    bootstrap = streaming["kafka"]["bootstrap"]
    run_id, topics = fresh_topics(bootstrap)
    args = job_args(bootstrap, run_id, topics, rules_file, control=True)
    job = local.submit(flink_cluster, "fraud-detector", args, config=CHECKPOINTS)
    local.wait_running(flink_cluster, job.job_id)
    control = Producer({"bootstrap.servers": bootstrap})
    group = args.group("fraud-detector")
    produce(bootstrap, topics["transactions"], [_event("C1", n) for n in range(0, 6)])
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    control.produce(topics["control"], b"true", key=b"customer:C1")
    control.flush(10)
    wait_metric(flink_cluster, job.job_id, "control_records", 1)
    produce(bootstrap, topics["transactions"], [_event("C1", n) for n in range(6, 9)])
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    control.produce(topics["control"], None, key=b"customer:C1")  # tombstone: unlisted
    control.flush(10)
    wait_metric(flink_cluster, job.job_id, "control_records", 2)
    produce(bootstrap, topics["transactions"], [_event("C1", n) for n in range(9, 12)])
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    assert local.job_info(flink_cluster, job.job_id)["state"] == "RUNNING"  # no restart
    local.stop_with_savepoint(flink_cluster, job.job_id)
    blocked = {
        a["transaction_id"]
        for a in alerts_of(bootstrap, topics["alerts"])
        if any(r["code"] == "FR-005" for r in a["reasons"])
    }
    assert blocked == {"C1-6", "C1-7", "C1-8"}


def test_savepoint_with_old_rules_restores_with_new_rules_at_parallelism_2(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster, tmp_path: Path
) -> None:
    """The operator's upgrade path (stop with savepoint, redeploy with new rules) and a
    rescale from 1 to 2: every customer's state carries over."""
    bootstrap = streaming["kafka"]["bootstrap"]
    run_id, topics = fresh_topics(bootstrap)
    old_rules, new_rules = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_rules.write_text(RulesConfig(version="old").to_yaml())
    new = RulesConfig.model_validate({"version": "new", "high_value": {"multiplier": 2.5}})
    new_rules.write_text(yaml.safe_dump(new.model_dump(mode="json")))
    lines = generated(4000, seed=31, customers=100)
    first, second = lines[:2000], lines[2000:]
    group = f"{run_id}.fraud-detector"

    old_args = job_args(bootstrap, run_id, topics, old_rules)
    job = local.submit(flink_cluster, "fraud-detector", old_args, config=CHECKPOINTS)
    local.wait_running(flink_cluster, job.job_id)
    produce(bootstrap, topics["transactions"], first)
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    savepoint = local.stop_with_savepoint(flink_cluster, job.job_id)

    new_args = job_args(bootstrap, run_id, topics, new_rules)
    job = local.submit(flink_cluster, "fraud-detector", new_args, config=CHECKPOINTS,
                       parallelism=2, restore_from=savepoint)  # fmt: skip
    local.wait_running(flink_cluster, job.job_id)
    produce(bootstrap, topics["transactions"], second)
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    local.stop_with_savepoint(flink_cluster, job.job_id)

    model = load_model()
    expected = reference(
        lines,
        [(0, Detector(RulesConfig(version="old"), model)), (2000, Detector(new, model))],
    )
    got = by_id(alerts_of(bootstrap, topics["alerts"]))
    assert got == by_id(expected)
    assert {a["rules_version"] for a in got.values()} == {
        RulesConfig(version="old").content_version,
        new.content_version,
    }


def test_parallelism_2_raises_the_same_alerts_as_parallelism_1(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster, rules_file: Path
) -> None:
    bootstrap = streaming["kafka"]["bootstrap"]
    run_id, topics = fresh_topics(bootstrap)
    args = job_args(bootstrap, run_id, topics, rules_file)
    lines = generated(3000, seed=41, customers=100)
    job = local.submit(flink_cluster, "fraud-detector", args, config=CHECKPOINTS, parallelism=2)
    local.wait_running(flink_cluster, job.job_id)
    produce(bootstrap, topics["transactions"], lines)
    wait_processed(flink_cluster, job.job_id, bootstrap, args.group("fraud-detector"),
                   topics["transactions"])  # fmt: skip
    local.stop_with_savepoint(flink_cluster, job.job_id)
    detector = Detector(RulesConfig.from_yaml(rules_file), load_model())
    assert by_id(alerts_of(bootstrap, topics["alerts"])) == by_id(reference(lines, [(0, detector)]))


def test_the_aggregator_counts_per_store_and_window(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster
) -> None:
    bootstrap = streaming["kafka"]["bootstrap"]
    run_id, topics = fresh_topics(bootstrap)
    args = JobArgs.for_topics(
        bootstrap, topics, group_id=run_id, starting_offsets="earliest", windows=(60, 300),
        idle_timeout_ms=2000, allowed_lateness_ms=3_600_000,
    )  # fmt: skip

    def txn(tid: str, store: str, at: str, amount: str) -> bytes:
        return orjson.dumps({"transaction_id": tid, "customer_id": f"c-{tid}", "store_id": store,
                             "amount": amount, "timestamp": f"2026-01-05T{at}Z"})  # fmt: skip

    job = local.submit(flink_cluster, "realtime-aggregator", args, config=CHECKPOINTS)
    local.wait_running(flink_cluster, job.job_id)
    group = args.group("realtime-aggregator")
    # The alert first, read before any transaction; and an hour of allowed lateness (event
    # time): whichever input the job reads first, a window's last revision counts everything
    # (with an idle alerts topic the union's watermark is the transactions' alone, so an alert
    # read after them is late, and counted in a new revision).
    alert = {"transaction_id": "b", "store_id": "S1", "event_time": "2026-01-05T10:00:20+00:00"}
    produce(bootstrap, topics["alerts"], [orjson.dumps(alert)])
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["alerts"])
    produce(bootstrap, topics["transactions"], [
        txn("a", "S1", "10:00:10", "10.00"), txn("b", "S1", "10:00:20", "20.00"),
        txn("c", "S1", "10:01:30", "30.00"), txn("d", "S2", "10:00:40", "5.50"),
    ])  # fmt: skip
    wait_processed(flink_cluster, job.job_id, bootstrap, group, topics["transactions"])
    # Much later events close the windows (the other partitions go idle after 2 s).
    produce(bootstrap, topics["transactions"], [txn("z", "S9", "12:00:00", "1.00")])
    produce(bootstrap, topics["alerts"], [orjson.dumps({**alert, "transaction_id": "y",
            "store_id": "S9", "event_time": "2026-01-05T12:00:00+00:00"})])  # fmt: skip
    wait_metric(flink_cluster, job.job_id, "windows_emitted", 5, timeout=120)
    local.stop_with_savepoint(flink_cluster, job.job_id)
    rows = [orjson.loads(m.value()) for m in read_topic(bootstrap, topics["metrics"], run_id)]
    latest = {}
    for r in rows:
        key = (r["store_id"], r["window_seconds"], r["window_start"])
        if key not in latest or r["revision"] > latest[key]["revision"]:
            latest[key] = r
    minute = {k[0]: v for k, v in latest.items() if k[1] == 60 and "T10:00" in k[2]}
    assert (minute["S1"]["transactions"], minute["S1"]["amount_sum"], minute["S1"]["alerts"]) == (
        2, "30.00", 1,
    )  # fmt: skip
    assert (minute["S2"]["transactions"], minute["S2"]["amount_avg"]) == (1, "5.50")
    five = latest[("S1", 300, "2026-01-05T10:00:00+00:00")]
    assert (five["transactions"], five["amount_sum"], five["alerts"]) == (3, "60.00", 1)
    assert latest[("S1", 60, "2026-01-05T10:01:00+00:00")]["transactions"] == 1
