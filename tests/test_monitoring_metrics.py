"""The metrics code behind the dashboards and alerts (config/monitoring/): no cluster."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow_jobs.flink.fraud_detector import (
    LATENCY_BUCKETS_MS,
    LATENCY_COUNTERS,
    LatencyBuckets,
)
from streamflow_operator.reconcile import parse_spec
from streamflow_operator.render import Meta, PublishedModel, render_all
from tests.specs import merge

pytestmark = pytest.mark.unit
SAMPLE = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "config/samples/fraudpipeline.yaml").read_text()
)
META = Meta("payments", "fraud", uid="u-1", model=PublishedModel("payments-model-0", "m1", "c"))


def flink_deployments(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in render_all(parse_spec(spec), META) if c["kind"] == "FlinkDeployment"]


def flushed(samples: list[int]) -> Counter[str]:
    totals: Counter[str] = Counter()

    def counter(name: str):  # type: ignore[no-untyped-def]
        return lambda n: totals.update({name: n})

    buckets = LatencyBuckets()
    for ms in samples:
        buckets.observe(ms)
    buckets.flush({name: counter(name) for name in LATENCY_COUNTERS})
    return totals


def test_latency_buckets_are_cumulative_and_bounds_inclusive() -> None:
    totals = flushed([0, 10, 11, 99, 100, 101, 600, 10_000, 10_001, 86_400_000])
    assert totals == {
        "decision_latency_le_10": 2,
        "decision_latency_le_25": 3,
        "decision_latency_le_50": 3,
        "decision_latency_le_100": 5,
        "decision_latency_le_250": 6,
        "decision_latency_le_500": 6,
        "decision_latency_le_1000": 7,
        "decision_latency_le_2500": 7,
        "decision_latency_le_5000": 7,
        "decision_latency_le_10000": 8,  # the two slower ones only in decision_latency_samples
    }


def test_a_flush_hands_over_each_sample_once() -> None:
    buckets = LatencyBuckets()
    seen: Counter[str] = Counter()
    count = {n: (lambda n_, name=n: seen.update({name: n_})) for n in LATENCY_COUNTERS}
    buckets.observe(30)
    buckets.flush(count)
    buckets.flush(count)  # nothing new: no call
    buckets.observe(3000)
    buckets.flush(count)
    assert seen["decision_latency_le_50"] == 1
    assert seen["decision_latency_le_5000"] == 2
    assert seen["decision_latency_le_10"] == 0


def test_p99_from_the_buckets_is_the_first_bound_holding_99_percent() -> None:
    """What the p99 alert computes: 990 fast decisions and 10 slow ones put p99 at the fast
    bucket; one more slow decision moves it to the slow one."""
    fast, slow = 40, 700
    for n_slow, p99 in ((10, 50), (11, 1000)):
        totals = flushed([fast] * (1000 - n_slow) + [slow] * n_slow)
        share = {b: totals[f"decision_latency_le_{b}"] / 1000 for b in LATENCY_BUCKETS_MS}
        assert min(b for b in LATENCY_BUCKETS_MS if share[b] >= 0.99) == p99


def test_the_live_models_age_comes_from_its_published_copy() -> None:
    from prometheus_client import REGISTRY  # noqa: PLC0415

    from streamflow_operator import metrics  # noqa: PLC0415

    def value(version: str) -> float | None:
        return REGISTRY.get_sample_value(
            "streamflow_model_live_since_timestamp_seconds",
            {"namespace": "ns", "pipeline": "p", "model_version": version},
        )

    children = [
        {"kind": "ConfigMap", "metadata": {"name": "p-rules-1", "creationTimestamp": "x"}},
        {
            "kind": "ConfigMap",
            "metadata": {"name": "p-model-a", "creationTimestamp": "2026-11-01T10:00:00Z"},
        },
    ]
    since = metrics.live_since(children, "p-model-a")
    assert since == 1793527200.0
    assert metrics.live_since(children, "p-model-b") is None
    metrics.record_model("ns", "p", "m1", since)
    assert value("m1") == since
    metrics.record_model("ns", "p", "m1", None)  # the copy not seen this pass: kept
    assert value("m1") == since
    metrics.record_model("ns", "p", "m2", since + 60)  # a new model: one series
    assert (value("m1"), value("m2")) == (None, since + 60)
    metrics.record_model("ns", "p", None, None)  # pipeline deleted
    assert value("m2") is None


def test_the_metrics_configmap_counts_for_the_database_not_the_model() -> None:
    from streamflow_operator.render import PublishedModel  # noqa: PLC0415
    from streamflow_operator.status import ModelInfo, Observation, build_status  # noqa: PLC0415

    def cm(name: str) -> dict[str, object]:
        return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}}

    obs = Observation(
        spec=None,
        model=ModelInfo(PublishedModel("p-model-a", "m1", "sha256:a")),
        children=[cm("p-model-a"), cm("p-pg-monitoring")],
        deleting=["x"],
    )
    status, _ = build_status(obs, {}, 1, now="2026-01-01T00:00:00Z")
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["ModelReady"]["message"] == "1 ready"
    assert by_type["DatabaseReady"]["message"] == "1 ready"


def test_every_job_serves_its_metrics_to_prometheus() -> None:
    """Flink's Prometheus reporter on every FlinkDeployment, its port named for a PodMonitor
    (config/monitoring/podmonitors.yaml scrapes port `metrics`)."""
    for fd in flink_deployments(SAMPLE["spec"]):
        conf = fd["spec"]["flinkConfiguration"]
        assert conf["metrics.reporter.prom.factory.class"] == (
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        )
        assert conf["metrics.reporter.prom.port"] == "9249"
        (container,) = fd["spec"]["podTemplate"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9249, "protocol": "TCP"} in container["ports"]


def test_the_cluster_exports_the_warehouse_freshness() -> None:
    """CNPG's exporter runs our custom queries on the warehouse's database (ADR 0044); a
    referenced Cluster gets the ConfigMap too, for its owner to name (docs/runbook.md)."""
    for create in (True, False):
        spec = merge(SAMPLE["spec"], {"postgres": {"create": create}})
        children = render_all(parse_spec(spec), META)
        (queries,) = [c for c in children if c["metadata"]["name"] == "payments-pg-monitoring"]
        assert queries["metadata"]["labels"]["cnpg.io/reload"] == ""
        parsed = yaml.safe_load(queries["data"]["queries.yaml"])
        assert {q["target_databases"][0] for q in parsed.values()} == {
            SAMPLE["spec"]["postgres"].get("database", "streamflow")
        }
        clusters = [c for c in children if c["kind"] == "Cluster"]
        assert len(clusters) == int(create)
        for cluster in clusters:
            assert cluster["spec"]["monitoring"]["customQueriesConfigMap"] == [
                {"name": "payments-pg-monitoring", "key": "queries.yaml"}
            ]
