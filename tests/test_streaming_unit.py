"""The streaming data plane's pure parts: job arguments, routing, control records, the one
call into the detector core, the thread-mode numba workaround. No Kafka, no Flink."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
import yaml

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import parse_transaction
from streamflow_jobs.flink.args import JobArgs, parse_args, postgres_dsn
from streamflow_jobs.model.forest import ForestScorer
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState, encode_state

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]

ARGS = JobArgs(
    bootstrap_servers="kafka:9092",
    transactions_topic="fraud.payments.transactions",
    alerts_topic="a",
    metrics_topic="m",
    dead_letter_topic="d",
)


# ---- arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ARGS,
        JobArgs(
            bootstrap_servers="a:1,b:2",
            transactions_topic="t",
            alerts_topic="a",
            metrics_topic="m",
            dead_letter_topic="d",
            rules="/r.yaml",
            model="/m.json",
            control_topic="c",
            group_id="g",
            starting_offsets="earliest",
            max_out_of_orderness_ms=0,
            idle_timeout_ms=1,
            allowed_lateness_ms=2,
            max_clock_skew_seconds=300,
            windows=(10, 20),
            transactional_id_prefix="p",
        ),
    ],
)
def test_arguments_round_trip(args: JobArgs) -> None:
    assert parse_args(args.to_argv()) == args


def test_to_argv_writes_only_what_differs_from_the_defaults() -> None:
    assert ARGS.to_argv() == [
        "--bootstrap-servers", "kafka:9092", "--transactions-topic",
        "fraud.payments.transactions", "--alerts-topic", "a", "--metrics-topic", "m",
        "--dead-letter-topic", "d",
    ]  # fmt: skip


def test_the_renderers_arguments_parse_with_the_jobs_parser() -> None:
    """What the operator writes after `-pym <module>` for config/samples/fraudpipeline.yaml
    is exactly what the jobs accept (one definition for both sides)."""
    from streamflow_operator.reconcile import render_offline  # noqa: PLC0415

    text = render_offline((ROOT / "config/samples/fraudpipeline.yaml").read_text())
    deployments = [d for d in yaml.safe_load_all(text) if d["kind"] == "FlinkDeployment"]
    assert len(deployments) == 3
    for d in deployments:
        argv = d["spec"]["job"]["args"]
        module = argv[argv.index("-pym") + 1]
        assert module.startswith("streamflow_jobs.flink.")
        job = module.rsplit(".", 1)[1].replace("_", "-")
        args = parse_args(argv[argv.index("-pym") + 2 :], prog=job)  # its required topics too
        detector = job == "fraud-detector"
        assert args.rules == ("/etc/streamflow/rules/rules.yaml" if detector else None)
        assert args.max_clock_skew_seconds == (300 if detector else 0)  # production: clock on
        assert args.transactions_topic.endswith("transactions")
        assert parse_args(args.to_argv(), prog=job) == args


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--bootstrap-servers", "no port", "bootstrap servers"),
        ("--transactions-topic", "bad topic!", "transactions topic"),
        ("--windows", "60,60", "windows"),
        ("--max-clock-skew-seconds", "-1", "max clock skew seconds"),
    ],
)
def test_invalid_arguments_are_one_line_errors(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = dict(zip(ARGS.to_argv()[::2], ARGS.to_argv()[1::2], strict=True))
    argv[flag] = value
    with pytest.raises(SystemExit) as exc:
        parse_args([x for kv in argv.items() for x in kv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "".join(err)


def test_the_database_comes_from_the_environment_never_from_arguments() -> None:
    assert postgres_dsn({"STREAMFLOW_POSTGRES_DSN": " postgresql://u:p@h/db "}) == (
        "postgresql://u:p@h/db"
    )
    assert postgres_dsn({"STREAMFLOW_POSTGRES_DSN": ""}) is None
    assert "dsn" not in " ".join(ARGS.to_argv()).lower()


def test_jdbc_url_keeps_the_password_out_of_the_url() -> None:
    from streamflow_jobs.flink.common import jdbc_url  # noqa: PLC0415

    url, user, password = jdbc_url("postgresql://app:s3cr%40t@db.ns.svc:5433/payments")
    assert url.startswith("jdbc:postgresql://db.ns.svc:5433/payments?stringtype=unspecified")
    assert (user, password) == ("app", "s3cr@t") and "s3cr" not in url


# ---- transaction-processor routing ----------------------------------------------------------
def record(value: bytes | None, offset: int = 7) -> tuple[Any, ...]:
    return (None, value, "tx", 2, offset, None)


VALID = {
    "transaction_id": "t1",
    "customer_id": "c1",
    "store_id": "s1",
    "amount": 10.5,
    "timestamp": "2026-01-05T10:00:00-03:00",
}

MALFORMED: dict[str, tuple[bytes | None, str]] = {
    "empty record": (None, "empty_record"),
    "not json": (b"not json", "invalid_json"),
    "truncated json": (b'{"transaction_id": "t1"', "invalid_json"),
    "not an object": (b"[1, 2, 3]", "not_an_object"),
    "bad utf-8": (b'{"transaction_id": "\xff"}', "invalid_encoding"),
    "missing field": (
        orjson.dumps({k: v for k, v in VALID.items() if k != "store_id"}),
        "validation_error",
    ),
    "negative amount": (orjson.dumps({**VALID, "amount": -1}), "validation_error"),
    "three decimals": (orjson.dumps({**VALID, "amount": "1.234"}), "validation_error"),
    "naive timestamp": (
        orjson.dumps({**VALID, "timestamp": "2026-01-05T10:00:00"}),
        "validation_error",
    ),
    "latitude out of range": (orjson.dumps({**VALID, "latitude": 91}), "validation_error"),
    "blank id": (orjson.dumps({**VALID, "customer_id": "  "}), "validation_error"),
    "bad currency": (orjson.dumps({**VALID, "currency": "brl"}), "validation_error"),
    "schema version zero": (orjson.dumps({**VALID, "schema_version": 0}), "validation_error"),
    "too large": (b'{"x": "' + b"a" * 70_000 + b'"}', "payload_too_large"),
    "NUL character": (orjson.dumps({**VALID, "store_id": "s\x001"}), "unstorable_payload"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_malformed_record_becomes_one_dead_letter(name: str) -> None:
    from streamflow_jobs.flink.transaction_processor import process  # noqa: PLC0415

    value, error_type = MALFORMED[name]
    row, letter_json, outcome = process(record(value, offset=41))
    assert row is None and outcome == error_type
    letter = json.loads(letter_json or "")
    assert letter["error_type"] == error_type
    assert letter["source"] == {"kind": "kafka", "topic": "tx", "partition": 2, "offset": 41}
    assert letter["stage"] in {"parse", "validate", "sink"}
    assert len(letter["payload"].encode()) <= 10 * 1024 + 4 * 10  # cut at 10 KiB (escapes)
    assert letter["payload_bytes"] == (len(value) if value is not None else 0)
    assert letter["payload_truncated"] == (value is not None and len(value) > 10 * 1024)


def test_valid_versions_become_bronze_rows_with_their_coordinates() -> None:
    from streamflow_jobs.flink.transaction_processor import BRONZE_COLUMNS, process  # noqa: PLC0415

    v1 = {**VALID, "schema_version": 1}
    v3 = {**VALID, "schema_version": 3, "loyalty_tier": "gold"}
    for payload, version in ((VALID, "v2"), (v1, "v1"), (v3, "newer")):
        row, letter, outcome = process(record(orjson.dumps(payload)))
        assert letter is None and outcome == version and row is not None
        assert len(row) == len(BRONZE_COLUMNS)
        assert row[:3] == ("tx", 2, 7) and row[7] == "10.5"
        assert datetime.fromisoformat(row[12]) == datetime(2026, 1, 5, 13, tzinfo=UTC)


# ---- fraud-detector ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (b"customer:C1", b"true", ("customer", "C1", True)),
        (b"store:S9", b"false", ("store", "S9", False)),
        (b"store:S9", None, ("store", "S9", None)),
        (b"customer:C1", b'{"listed": true}', ("customer", "C1", True)),
        (b"product:P1", b"true", None),
        (b"customer:", b"true", None),
        (None, b"true", None),
        (b"customer:C1", b"maybe", None),
    ],
)
def test_control_records(key: bytes | None, value: bytes | None, expected: Any) -> None:
    from streamflow_jobs.flink.fraud_detector import parse_control  # noqa: PLC0415

    assert parse_control(key, value) == expected


def test_blacklist_overrides_apply_on_top_of_the_rules_file() -> None:
    from streamflow_jobs.flink.fraud_detector import blacklist  # noqa: PLC0415

    customers, stores = blacklist(
        ["C1", "C2"], ["S1"], iter([("customer:C2", "false"), ("store:S2", "true")])
    )
    assert customers == {"C1"} and stores == {"S1", "S2"}


def test_the_per_event_call_matches_the_core_one_event_at_a_time(
    small_world: tuple[Path, Path, list[str]],
) -> None:
    """detect() over encoded state == the core's own per-event loop over objects."""
    from streamflow_jobs.flink.fraud_detector import detect  # noqa: PLC0415

    events, _, _ = small_world
    detector = Detector(RulesConfig(), load_model())
    reference = Detector(RulesConfig(), load_model())
    encoded: dict[str, bytes] = {}
    objects: dict[str, CustomerState] = {}
    for raw in events.read_bytes().splitlines()[:2000]:
        txn = parse_transaction(raw).transaction  # type: ignore[union-attr]
        state, decision, _ = detect(detector, encoded.get(txn.customer_id), txn)
        assert state is not None
        encoded[txn.customer_id] = state
        obj = objects.setdefault(txn.customer_id, CustomerState())
        expected = reference.decide(txn, reference.evaluate(obj, txn))
        assert msgspec.json.encode(decision) == msgspec.json.encode(expected)
        assert state == encode_state(obj)


def test_unreadable_state_is_rejected_not_raised() -> None:
    from streamflow_jobs.flink.fraud_detector import Rejected, detect  # noqa: PLC0415

    txn = parse_transaction(orjson.dumps(VALID)).transaction  # type: ignore[union-attr]
    state, result, _ = detect(Detector(RulesConfig(), None), b"\x09garbage", txn)
    assert state is None and isinstance(result, Rejected)
    assert result.error_type == "state_unreadable"


def test_gil_safe_walk_is_bit_identical_to_the_compiled_walk() -> None:
    from streamflow_jobs.flink.thread_mode import gil_safe_walk  # noqa: PLC0415
    from streamflow_jobs.model import treewalk  # noqa: PLC0415

    scorer = ForestScorer.load()
    rows = np.random.default_rng(5).normal(size=(1001, len(scorer.features)))
    rows[::7] *= 40  # far outliers too
    x = rows.astype(np.float32)
    args = scorer._walk_args
    compiled = treewalk.compiled_walk()
    safe = gil_safe_walk(args[0].dtype, args[1].dtype)
    assert np.array_equal(safe(x, *args), compiled(x, *args))
    assert np.array_equal(safe(x[:1], *args), compiled(x[:1], *args))


# ---- live --------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    from streamflow_jobs.live import percentile  # noqa: PLC0415

    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7], 99) == 7 and percentile([], 50) is None


def test_a_line_too_large_for_kafka_is_an_ingest_dead_letter() -> None:
    from streamflow_jobs.live import ingest_letter  # noqa: PLC0415

    letter = orjson.loads(ingest_letter(b"x" * 20_000, 2_000_000, 12, "in.jsonl"))
    assert letter["stage"] == "ingest" and letter["error_type"] == "payload_too_large"
    assert letter["payload_bytes"] == 2_000_000 and letter["payload_truncated"]
    assert len(letter["payload"]) == 10 * 1024
    assert letter["source"] == {"kind": "file", "path": "in.jsonl", "line": 12}


def test_status_json_is_the_fixed_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamflow_jobs import infra  # noqa: PLC0415
    from streamflow_jobs.cli_streaming import infra_status  # noqa: PLC0415

    monkeypatch.setenv("STREAMFLOW_INFRA_DIR", str(tmp_path))
    infra.write_state(
        {
            "kafka": {"bootstrap": "127.0.0.1:1", "port": 1, "pid": 0},
            "postgres": {
                "dsn": "postgresql://u:p@127.0.0.1:2/streamflow",
                "port": 2,
                "base": str(tmp_path),
            },
        }
    )
    infra_status(json_output=True)
    shown = json.loads(capsys.readouterr().out)
    assert shown["kafka"]["bootstrap"] == "127.0.0.1:1"
    assert shown["postgres"]["dsn"] == "postgresql://u:p@127.0.0.1:2/streamflow"
    assert shown["kafka"]["running"] is False and shown["running"] is False
    assert infra.postgres_dsn() == "postgresql://u:p@127.0.0.1:2/streamflow"
    assert (tmp_path / "state.json").stat().st_mode & 0o077 == 0  # it holds a password


def test_local_flink_clusters_keep_their_working_files_apart(tmp_path: Path) -> None:
    """TaskManagers' working directories (RocksDB's files) live under their own cluster: by
    default every local cluster used /tmp/tm_tm0, and one stopping deleted another's state."""
    from streamflow_jobs import infra  # noqa: PLC0415

    first = yaml.safe_load(infra._flink_config(tmp_path / "a", 1, 1, {}))
    second = yaml.safe_load(infra._flink_config(tmp_path / "b", 2, 1, {}))
    assert Path(first["io.tmp.dirs"]).is_relative_to(tmp_path / "a")
    assert Path(second["io.tmp.dirs"]).is_relative_to(tmp_path / "b")


def test_window_metrics_are_exact_decimals() -> None:
    from streamflow_jobs.flink.realtime_aggregator import (  # noqa: PLC0415
        metric,
        transaction_event,
        window_start,
    )

    event = transaction_event(orjson.dumps({**VALID, "amount": "0.10"}))
    assert event is not None and event[0] == "s1" and event[2] == 10
    assert window_start(event[1], 60_000) == event[1] - event[1] % 60_000
    assert window_start(-1, 60_000) == -60_000  # floor before 1970
    row = json.loads(metric("s1", 60, 0, (3, 30, 1), 0))
    assert (row["amount_sum"], row["amount_avg"], row["alerts"]) == ("0.30", "0.10", 1)
    assert row["window_end"] == "1970-01-01T00:01:00+00:00"


def test_gil_safe_walk_scores_each_thread_its_own_row() -> None:
    """Two subtasks in one TaskManager share its interpreter, and ctypes lets go of the GIL
    during the walk: one thread's row or result must never reach another thread."""
    import threading  # noqa: PLC0415

    from streamflow_jobs.flink.thread_mode import gil_safe_walk  # noqa: PLC0415

    scorer = ForestScorer.load()
    args = scorer._walk_args
    safe = gil_safe_walk(args[0].dtype, args[1].dtype)
    rows = np.random.default_rng(9).normal(size=(400, len(scorer.features))).astype(np.float32)
    rows[::5] *= 30
    expected = [float(safe(rows[i : i + 1], *args)[0]) for i in range(len(rows))]
    wrong: list[int] = []

    def score(order: list[int]) -> None:
        for _ in range(25):
            for i in order:
                if float(safe(rows[i : i + 1], *args)[0]) != expected[i]:
                    wrong.append(i)

    threads = [
        threading.Thread(target=score, args=(list(range(len(rows)))[::step],)) for step in (1, -1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_gil_safe_walk_of_the_boosted_trees_is_bit_identical() -> None:
    from streamflow_jobs.flink.thread_mode import gil_safe_walk  # noqa: PLC0415
    from streamflow_jobs.model import boosting, treewalk  # noqa: PLC0415
    from streamflow_jobs.model.features import MODEL_INPUTS  # noqa: PLC0415
    from streamflow_jobs.model.train import train_boosting  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, len(MODEL_INPUTS)))
    y = x[:, 0] + x[:, 9] > 1.5
    scorer = boosting.BoostingScorer.from_document(
        train_boosting(x, y, seed=1, training={"rows": len(x)})
    )
    args = scorer._walk_args
    rows = rng.normal(size=(501, len(MODEL_INPUTS))).astype(np.float32)
    compiled = treewalk.compiled_walk()
    safe = gil_safe_walk(args[0].dtype, args[1].dtype)
    assert np.array_equal(safe(rows, *args), compiled(rows, *args))
    assert np.array_equal(safe(rows[:1], *args), compiled(rows[:1], *args))


def test_the_state_cache_round_trips_every_byte_and_writes_through() -> None:
    from streamflow_jobs.flink import fraud_detector  # noqa: PLC0415

    class FakeValueState:  # a unit test's stand-in for Flink's keyed ValueState of one key
        def __init__(self) -> None:
            self.stored: str | None = None
            self.reads = 0

        def value(self) -> str | None:
            self.reads += 1
            return self.stored

        def update(self, text: str) -> None:
            self.stored = text

    class Context:
        def __init__(self) -> None:
            self.backing = FakeValueState()

        def get_state(self, descriptor: Any) -> FakeValueState:
            return self.backing

    context = Context()
    cache = fraud_detector.StateCache(context, "customer-state")
    assert cache.get("C1") is None and context.backing.reads == 1
    data = bytes(range(256))
    cache.put("C1", data)
    assert context.backing.stored is not None  # written through to Flink's state
    assert cache.get("C1") == data and context.backing.reads == 1  # served by the copy


def test_a_kafka_cluster_id_never_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage tool would read "-..." as an option (seen once in a test run)."""
    import uuid  # noqa: PLC0415

    from streamflow_jobs import infra  # noqa: PLC0415

    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x01" * 15), uuid.UUID(bytes=b"\x10" * 16)])
    monkeypatch.setattr(infra.uuid, "uuid4", lambda: next(drawn))
    cluster_id = infra._kafka_cluster_id(tmp_path)
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
    assert infra._kafka_cluster_id(tmp_path) == cluster_id  # kept for the next start
