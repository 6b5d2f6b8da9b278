"""``make bench-streaming``: the fraud-detector on a real Kafka broker and Flink cluster.

Figures (written to docs/benchmarks.md between the ``streaming`` markers):

- sustained throughput of the fraud-detector, parallelism 1 (one TaskManager) and 2 (two
  TaskManagers of one slot each: one Python interpreter, one GIL per TaskManager);
- decision latency at a fixed rate with checkpoints every 10 s: produced -> alert readable
  (read_uncommitted) and produced -> alert committed (read_committed);
- checkpoint size per 1,000 customers;
- recovery time after a TaskManager is killed.

Everything runs in a temporary directory with its own broker and cluster (never ``.infra/``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamflow_jobs import infra
from streamflow_jobs.flink import local
from streamflow_jobs.flink.args import JobArgs
from streamflow_jobs.flink.fraud_detector import FLUSH_EVERY
from streamflow_jobs.generator import Generator, GeneratorConfig
from streamflow_jobs.live import percentile, read_topic
from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH
from streamflow_jobs.rules.config import RulesConfig

DOC = infra.REPO / "docs" / "benchmarks.md"
START, END = "<!-- streaming:start -->", "<!-- streaming:end -->"


@contextmanager
def environment(taskmanagers: int) -> Iterator[tuple[str, infra.FlinkCluster, Path]]:
    base = Path(tempfile.mkdtemp(prefix="streamflow-bench-"))
    kafka = cluster = None
    try:
        kafka = infra.start_kafka(base / "kafka")
        cluster = infra.start_flink(base / "flink", taskmanagers=taskmanagers, slots=1)
        rules = base / "rules.yaml"
        rules.write_text(RulesConfig(version="bench").to_yaml(), "utf-8")
        yield kafka.bootstrap, cluster, rules
    finally:
        if cluster is not None:
            infra.stop_flink(cluster)
        if kafka is not None:
            infra.stop_pid(kafka.pid)
        shutil.rmtree(base, ignore_errors=True)


def events(n: int, customers: int, seed: int = 5) -> list[tuple[bytes, bytes]]:
    gen = Generator(GeneratorConfig(events=n, seed=seed, customers=customers))
    return [(e["customer_id"].encode(), orjson.dumps(e)) for e, _ in gen.generate()]


def topics(bootstrap: str, name: str) -> dict[str, str]:
    t = {k: f"{name}.{k}" for k in ("transactions", "alerts", "metrics", "dead-letters")}
    infra.create_topics(
        bootstrap,
        dict.fromkeys(t.values(), 3),
        config={t["alerts"]: {"message.timestamp.type": "LogAppendTime"}},
    )
    return t


def args_for(bootstrap: str, t: dict[str, str], rules: Path, group: str) -> JobArgs:
    return JobArgs.for_topics(bootstrap, t, rules=str(rules), model=str(DEFAULT_MODEL_PATH),
                              group_id=group, starting_offsets="earliest")  # fmt: skip


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer  # noqa: PLC0415

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                  "compression.type": "lz4"})  # fmt: skip
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key=key)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)


def events_in(cluster: infra.FlinkCluster, job_id: str) -> float:
    return local.metrics(cluster, job_id, ["events_in"])["events_in"]


def throughput(parallelism: int, n: int, customers: int) -> dict[str, Any]:
    """Pre-load ``n`` events, start the detector, and time the middle 80 % of them."""
    with environment(parallelism) as (bootstrap, cluster, rules):
        t = topics(bootstrap, f"tp{parallelism}")
        produce_all(bootstrap, t["transactions"], events(n, customers))
        config = {"execution.checkpointing.interval": "10s"}
        job = local.submit(cluster, "fraud-detector", args_for(bootstrap, t, rules, "tp"),
                           config=config, parallelism=parallelism)  # fmt: skip
        local.wait_running(cluster, job.job_id)
        samples: list[tuple[float, float]] = []
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            count = events_in(cluster, job.job_id)
            samples.append((time.monotonic(), count))
            if count >= n - FLUSH_EVERY:  # the job reports its count in steps
                break
            time.sleep(1)
        low = next((s for s in samples if s[1] >= 0.1 * n), samples[0])
        high = next((s for s in samples if s[1] >= 0.9 * n), samples[-1])
        rate = (high[1] - low[1]) / max(high[0] - low[0], 1e-9)
        checkpoint = checkpoint_size(cluster, job.job_id)
        local.cancel(cluster, job.job_id)
    return {"parallelism": parallelism, "taskmanagers": parallelism, "events": n,
            "customers": customers, "events_per_second": round(rate),
            "checkpoint_bytes": checkpoint}  # fmt: skip


def checkpoint_size(cluster: infra.FlinkCluster, job_id: str) -> int | None:
    before = local.completed_checkpoints(cluster, job_id)
    local.wait_checkpoint(cluster, job_id, before, timeout=60)
    latest = local.checkpoints(cluster, job_id).get("latest", {}).get("completed") or {}
    size = latest.get("state_size") or latest.get("full_size")
    return int(size) if size is not None else None


def latency(
    rate: int,
    seconds: int,
    customers: int,
    warmup: int = 30,
    extra: dict[str, str] | None = None,
    samples: Path | None = None,
) -> dict[str, Any]:
    """After a warm-up of ``warmup`` seconds' worth of events, produce at ``rate`` for
    ``seconds``; per alert, produced -> appended to the alerts topic (readable with
    read_uncommitted: the topic stamps LogAppendTime) and produced -> the checkpoint that
    commits it completed (readable with read_committed). ``extra``: more Flink configuration
    for the job (``-D``); ``samples``: a JSON file for every alert's timings and the
    checkpoints, to find where a tail comes from."""
    from confluent_kafka import Producer  # noqa: PLC0415

    with environment(1) as (bootstrap, cluster, rules):
        t = topics(bootstrap, "lat")
        config = {"execution.checkpointing.interval": "10s", **(extra or {})}
        job = local.submit(cluster, "fraud-detector", args_for(bootstrap, t, rules, "lat"),
                           config=config)  # fmt: skip
        local.wait_running(cluster, job.job_id)
        # Warm up first (JIT, RocksDB, Python caches: the first ~25 s after a start run at a
        # fraction of the steady rate), then measure the next `seconds` at `rate`.
        warm = rate * warmup
        records = events(warm + rate * seconds, customers, seed=9)
        produce_all(bootstrap, t["transactions"], records[:warm])
        deadline = time.monotonic() + 600
        while events_in(cluster, job.job_id) < warm - FLUSH_EVERY:
            if time.monotonic() > deadline:
                raise infra.InfraError("the detector did not finish its warm-up")
            time.sleep(0.5)
        records = records[warm:]
        sent: dict[str, int] = {}
        acked: dict[str, int] = {}

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                acked[orjson.loads(msg.value())["transaction_id"]] = time.time_ns() // 1_000_000

        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True})
        started = time.monotonic()
        for i, (key, value) in enumerate(records):
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            sent[orjson.loads(value)["transaction_id"]] = time.time_ns() // 1_000_000
            p.produce(t["transactions"], value, key=key, on_delivery=delivered)
            p.poll(0)
        p.flush(60)
        achieved = len(records) / (time.monotonic() - started)
        local.wait_checkpoint(cluster, job.job_id, timeout=60)
        local.wait_checkpoint(cluster, job.job_id, timeout=60)  # every alert now committed
        history = local.checkpoints(cluster, job.job_id).get("history", [])
        done = sorted(
            (c["trigger_timestamp"], c["latest_ack_timestamp"])
            for c in history
            if c.get("status") == "COMPLETED"
        )
        appended = {
            orjson.loads(m.value() or b"{}").get("transaction_id"): m.timestamp()[1]
            for m in read_topic(bootstrap, t["alerts"], "lat-reader")
        }
        if samples is not None:  # each task's sync part per checkpoint; the cluster's logs
            history = [{**c, "tasks": checkpoint_tasks(cluster, job.job_id, c["id"])}
                       for c in history]  # fmt: skip
            shutil.copytree(cluster.base / "log", samples.with_suffix(".logs"), dirs_exist_ok=True)
        local.cancel(cluster, job.job_id)
    readable, committed = [], []
    for tid, at in appended.items():
        if tid not in sent:
            continue
        readable.append(at - sent[tid])
        commit = next((end for start, end in done if start >= at), None)
        if commit is not None:
            committed.append(commit - sent[tid])
    if samples is not None:
        rows = [{"tid": tid, "sent": sent[tid], "acked": acked.get(tid), "appended": at}
                for tid, at in appended.items() if tid in sent]  # fmt: skip
        samples.write_bytes(orjson.dumps({"alerts": rows, "checkpoints": history}))
    out: dict[str, Any] = {"rate": rate, "achieved_rate": round(achieved), "seconds": seconds,
                           "load": round(os.getloadavg()[0], 1)}  # fmt: skip
    for name, values in (("read_uncommitted", readable), ("read_committed", committed)):
        ms = sorted(values)
        out[name] = {"alerts": len(ms), "p50": percentile(ms, 50),
                     "p99": percentile(ms, 99), "max": ms[-1] if ms else None}  # fmt: skip
    return out


def checkpoint_tasks(cluster: infra.FlinkCluster, job_id: str, checkpoint: int) -> list[Any]:
    """Per task of one checkpoint: its subtasks' sync, async, alignment and start delay."""
    base = f"{cluster.rest}/jobs/{job_id}/checkpoints/details/{checkpoint}"
    details = infra.rest_json(base)
    return [{"vertex": vertex, **infra.rest_json(f"{base}/subtasks/{vertex}")}
            for vertex in details.get("tasks", {})]  # fmt: skip


def recovery(n: int, customers: int) -> dict[str, Any]:
    """Kill the TaskManager mid-stream (right after its first checkpoint, events still
    flowing); time until the job runs again and until it processes records again."""
    with environment(1) as (bootstrap, cluster, rules):
        t = topics(bootstrap, "rec")
        records = events(n, customers, seed=13)
        produce_all(bootstrap, t["transactions"], records[: n // 2])
        config = {"execution.checkpointing.interval": "5s"}
        job = local.submit(cluster, "fraud-detector", args_for(bootstrap, t, rules, "rec"),
                           config=config)  # fmt: skip
        local.wait_running(cluster, job.job_id)
        local.wait_checkpoint(cluster, job.job_id, 0, timeout=120)
        before = events_in(cluster, job.job_id)
        killed = time.monotonic()
        os.kill(cluster.taskmanager_pids[0], signal.SIGKILL)
        cluster.start_taskmanager()  # as Kubernetes would restart the pod
        produce_all(bootstrap, t["transactions"], records[n // 2 :])  # the stream goes on
        deadline = killed + 600
        while local.job_info(cluster, job.job_id)["state"] == "RUNNING":
            if time.monotonic() > deadline:
                raise infra.InfraError("the JobManager never noticed the lost TaskManager")
            time.sleep(0.05)
        local.wait_running(cluster, job.job_id, timeout=300)
        running = time.monotonic() - killed
        while events_in(cluster, job.job_id) <= 0:  # counters restart from zero
            if time.monotonic() > deadline:
                raise infra.InfraError("the restarted job processed nothing")
            time.sleep(0.2)
        resumed = time.monotonic() - killed
        local.cancel(cluster, job.job_id)
    return {"events_before_kill": int(before), "to_running_s": round(running, 1),
            "to_processing_s": round(resumed, 1)}  # fmt: skip


def write(results: dict[str, Any]) -> None:
    tp = results["throughput"]
    lat = results["latency"]
    rec = results["recovery"]
    lines = [
        START,
        "## Streaming: the fraud-detector on Kafka + Flink (thread mode)",
        "",
        f"Measured {results['when']} on {results['machine']} with `make bench-streaming` "
        "(`python -m streamflow_jobs.flink.bench`): a real broker and a Flink session cluster "
        "on 127.0.0.1, RocksDB state, exactly-once Kafka sinks, TaskManagers of one slot. The "
        "machine is shared: figures are noisy.",
        "",
        "| parallelism (TaskManagers) | events | customers | sustained events/s "
        "| checkpoint, full state, per 1,000 customers |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in tp:
        size = row["checkpoint_bytes"]
        per_1000 = f"{size / row['customers'] * 1000 / 1024:.0f} KiB" if size else "n/a"
        lines.append(
            f"| {row['parallelism']} ({row['taskmanagers']}) | {row['events']:,} | "
            f"{row['customers']:,} | {row['events_per_second']:,} | {per_1000} |"
        )
    best = max(row["events_per_second"] for row in tp)
    lines += [
        "",
        f"Target >= 10,000 events/s: **not reached** (best {best:,}). A py-spy profile of the "
        "TaskManager at parallelism 1 (`uvx py-spy record --pid <taskmanager> --format raw`, "
        "not part of this command) put ~40 % of the samples in Python; of those, the forest "
        "walk ~29 %, keyed-state reads and writes ~26 %, parsing, rules and blend the rest "
        "(both walk and state reads were cut after that profile). The other samples are "
        "PyFlink's per-record Java<->Python crossing. Two TaskManagers did not scale here: the "
        "2 cores also run the broker, the JobManager, the producer and other builds. The first "
        "~25 s after a (re)start run at ~700 events/s (JIT, caches) before the steady rate.",
        "",
        f"Decision latency at {lat['rate']:,} events/s (achieved {lat['achieved_rate']:,}) "
        f"after a 30 s warm-up, checkpoints every 10 s, over {lat['seconds']} s:",
        "",
        "| alert readable with | alerts | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for isolation in ("read_uncommitted", "read_committed"):
        r = lat[isolation]
        lines.append(f"| {isolation} | {r['alerts']} | {r['p50']} | {r['p99']} | {r['max']} |")
    p99 = lat["read_uncommitted"]["p99"]
    reached = "reached" if p99 is not None and p99 <= 250 else "**not reached**"
    lines += [
        "",
        f"Target p99 <= 250 ms (read_uncommitted): {reached}. "
        "read_uncommitted: produced -> the alert appended to its topic (LogAppendTime). "
        "read_committed: produced -> the checkpoint that commits it completed; bounded by the "
        "checkpoint interval under exactly-once (see docs/streaming.md for the trade-off). "
        "Load average of the 2 cores (1 min) when the measurement ended: "
        f"{lat.get('load', 'n/a')}.",
        "",
        "Where the tail comes from (measured 2026-12-03 with `uv run python -m "
        "streamflow_jobs.flink.bench --only latency --rate 1000 --seconds 40 --samples FILE`: "
        "every alert's timings, "
        "each checkpoint's per-task synchronous time and the cluster's logs, RocksDB's "
        "included, timed against the task thread's pauses). At every checkpoint the "
        "detector's task thread stops for the synchronous part: the alerts' Kafka transaction "
        "is flushed and the next one started (a broker round trip, 2-40 ms, up to 300 ms when "
        "the machine is loaded), then RocksDB writes its memtable, every update since the last "
        "checkpoint, to a new SST file (20-190 ms; up to 390 ms loaded). Measured pauses of the "
        "task thread: 170-530 ms every 10 s. Events arriving meanwhile queue and then drain at "
        "the spare rate, so a pause P delays the last of them by about P x capacity / "
        "(capacity - rate): ~1.7 P at 2,000 of ~4,800 events/s. Between checkpoints a decision "
        "takes ~60 ms. When other work loads the 2 cores the detector's capacity drops towards "
        "the offered rate and the same pause becomes seconds. Not the cause (measured): PyFlink's "
        "`python.fn-execution.bundle.*` (thread mode calls Python once per record; the embedded "
        "operator's finishBundle is empty), the source's `fetch.max.wait.ms` (fetches answered "
        "in 13-26 ms on average while events flow), checkpoint alignment (one input channel), "
        "Python's full garbage collections (100-540 ms, but only in the first seconds after a "
        "start).",
    ]
    lines += [
        "",
        "Checkpoint size: Flink's `state_size` of the last checkpoint after the run (RocksDB "
        "SST files, incremental checkpoints; includes the Kafka source and sink state). The "
        "encoded customer state itself is <= 227 bytes (state.py); RocksDB's per-key overhead "
        "and not yet compacted files make up the rest, and vary with compaction timing.",
        "",
        f"Recovery after `kill -9` of the TaskManager (a new one started at once, as Kubernetes "
        f"would): job running again after {rec['to_running_s']} s, processing after "
        f"{rec['to_processing_s']} s.",
        END,
    ]
    text = DOC.read_text("utf-8") if DOC.is_file() else "# Benchmarks\n"
    block = "\n".join(lines)
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text, "utf-8")


RESULTS = infra.REPO / ".bench" / "streaming.json"
PARTS = ("throughput", "latency", "recovery")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="streamflow-bench-streaming")
    p.add_argument("--events", type=int, default=150_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--warmup", type=int, default=30, help="latency: seconds of warm-up events")
    p.add_argument(
        "--flink-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="latency: more Flink configuration for the job (repeatable)",
    )
    p.add_argument(
        "--samples",
        type=Path,
        help="latency: write every alert's timings and the checkpoints to this JSON file",
    )
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to measure; "
                   "the others keep their last figures (.bench/streaming.json)")  # fmt: skip
    a = p.parse_args(argv)
    results: dict[str, Any] = orjson.loads(RESULTS.read_bytes()) if RESULTS.is_file() else {}
    results["when"] = datetime.now(UTC).strftime("%Y-%m-%d")
    results["machine"] = (
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    )
    only = set(a.only.split(","))
    if "throughput" in only:
        results["throughput"] = [throughput(n, a.events, a.customers) for n in (1, 2)]
    if "latency" in only:
        extra = dict(item.split("=", 1) for item in a.flink_config)
        results["latency"] = latency(a.rate, a.seconds, a.customers, a.warmup, extra, a.samples)
    if "recovery" in only:
        results["recovery"] = recovery(a.events // 2, a.customers)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode(), flush=True)
    if all(part in results for part in PARTS):
        write(results)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
