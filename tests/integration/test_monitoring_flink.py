"""What Flink's Prometheus reporter really exports for a running fraud-detector: the names and
labels config/monitoring/ queries (tests/test_monitoring_rules.py checks the queries against
these names), and the decision-latency buckets cumulative on real traffic (ADR 0043)."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamflow_jobs import infra
from streamflow_jobs.flink import local
from streamflow_jobs.flink.fraud_detector import LATENCY_BUCKETS_MS, LATENCY_COUNTERS
from streamflow_jobs.rules.config import RulesConfig
from tests.integration.test_streaming import (
    CHECKPOINTS,
    fresh_topics,
    generated,
    job_args,
    produce,
    wait_processed,
)

pytestmark = pytest.mark.integration
USER = "flink_taskmanager_job_task_operator_streamflow_"
EXPECTED = {
    *(USER + n for n in ("events_in", "decisions", "alerts", "dead_letters", "duplicates")),
    *(USER + n for n in (*LATENCY_COUNTERS, "decision_latency_samples")),
    USER + "decision_latency_ms_sum",
    "flink_jobmanager_job_numRestarts",
    "flink_jobmanager_job_runningTime",
    "flink_jobmanager_job_lastCheckpointDuration",
    "flink_jobmanager_job_numberOfFailedCheckpoints",
    "flink_taskmanager_job_task_operator_pendingRecords",
}


def scrape(
    cluster: infra.FlinkCluster, job_id: str
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``job_id`` that the cluster's reporters serve, by name."""
    conf = yaml.safe_load((cluster.base / "conf" / "config.yaml").read_text())
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for port in str(conf["metrics.reporter.prom.port"]).split(","):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            continue  # this port was taken by another process: the reporter used the next
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("job_id") == job_id:
                    out[sample.name].append((sample.labels, sample.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


def test_the_reporter_exports_what_the_rules_query(
    streaming: dict[str, Any], flink_cluster: infra.FlinkCluster, tmp_path: Path
) -> None:
    bootstrap = streaming["kafka"]["bootstrap"]
    run_id, topics = fresh_topics(bootstrap)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RulesConfig(version="metrics").to_yaml())
    args = job_args(bootstrap, run_id, topics, rules)
    job = local.submit(flink_cluster, "fraud-detector", args, config=CHECKPOINTS)
    try:
        local.wait_running(flink_cluster, job.job_id)
        produce(bootstrap, topics["transactions"], generated(3000, seed=41, customers=100))
        wait_processed(
            flink_cluster, job.job_id, bootstrap, args.group("fraud-detector"),
            topics["transactions"],
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # the reporter reads the counters when scraped; the job hands them over
            samples = scrape(flink_cluster, job.job_id)  # every 128 events
            if total(samples, USER + "decision_latency_samples") > 0 and set(samples) >= EXPECTED:
                break
            assert time.monotonic() < deadline, sorted(EXPECTED - set(samples))
            time.sleep(1)
    finally:
        local.cancel(flink_cluster, job.job_id)

    # The rules select a job by its Flink name, `-` turned into `_` by the reporter.
    for name in EXPECTED:
        assert {labels["job_name"] for labels, _ in samples[name]} == {
            "streamflow_fraud_detector"
        }, name
    assert max(v for _, v in samples["flink_jobmanager_job_runningTime"]) > 0
    cumulative = [total(samples, USER + n) for n in LATENCY_COUNTERS]
    assert cumulative == sorted(cumulative), dict(zip(LATENCY_BUCKETS_MS, cumulative, strict=True))
    assert cumulative[-1] <= total(samples, USER + "decision_latency_samples")
    assert total(samples, USER + "decisions") > 2000  # handed to Flink every 128 events
