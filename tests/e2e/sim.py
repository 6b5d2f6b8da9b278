"""Stand-ins for Strimzi, the Flink operator and CloudNativePG: they write children's statuses
the way those operators do, so the FraudPipeline's own status logic runs for real."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from tests.e2e.conftest import Kube, wait_for

FP = ("streamflow.dev/v1alpha1", "FraudPipeline")
TOPIC = ("kafka.strimzi.io/v1", "KafkaTopic")
FLINK = ("flink.apache.org/v1beta1", "FlinkDeployment")
CLUSTER = ("postgresql.cnpg.io/v1", "Cluster")
DATABASE = ("postgresql.cnpg.io/v1", "Database")
JOB = ("batch/v1", "Job")
JOBS = ("transaction-processor", "fraud-detector", "realtime-aggregator")
TOPICS = ("transactions", "alerts", "metrics", "dead-letters")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(fp: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((fp or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def children_exist(kube: Kube, name: str, ns: str, kafka_ns: str) -> bool:
    return (
        all(kube.get(*TOPIC, f"{ns}-{name}-{t}", kafka_ns) for t in TOPICS)
        and all(kube.get(*FLINK, f"{name}-{j}", ns) for j in JOBS)
        and kube.get(*CLUSTER, f"{name}-pg", ns) is not None
        and kube.get(*DATABASE, f"{name}-db", ns) is not None
        and any(j["metadata"]["name"].startswith(f"{name}-migrate-") for j in kube.list(*JOB, ns))
        and kube.get("v1", "ConfigMap", f"{name}-rules", ns) is not None
        and kube.get("v1", "ConfigMap", f"{name}-model", ns) is not None
    )


def simulate_dependencies(kube: Kube, name: str, ns: str, kafka_ns: str) -> None:
    """Stand in for CloudNativePG (cluster, database, app secret), the Job and Strimzi."""
    t = now()
    kube.patch_status(
        *CLUSTER,
        f"{name}-pg",
        ns,
        {
            "phase": "Cluster in healthy state",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ClusterIsReady",
                    "message": "",
                    "lastTransitionTime": t,
                }
            ],
        },
    )
    kube.patch_status(*DATABASE, f"{name}-db", ns, {"applied": True})
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-pg-app", "namespace": ns},
            "data": {
                "uri": base64.b64encode(
                    f"postgresql://streamflow:s3cret@{name}-pg-rw.{ns}:5432/streamflow".encode()
                ).decode()
            },
        }
    )
    job = next(j for j in kube.list(*JOB, ns) if j["metadata"]["name"].startswith(f"{name}-"))
    wait_for(
        lambda: (
            (kube.get(*JOB, job["metadata"]["name"], ns) or {}).get("status", {}).get("startTime")
        ),
        what="job start time",
    )
    kube.patch_status(
        *JOB,
        job["metadata"]["name"],
        ns,
        {
            "completionTime": t,
            "succeeded": 1,
            "active": 0,
            "conditions": [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastProbeTime": t,
                    "lastTransitionTime": t,
                },
                {"type": "Complete", "status": "True", "lastProbeTime": t, "lastTransitionTime": t},
            ],
        },
    )
    for topic in TOPICS:
        kube.patch_status(
            *TOPIC,
            f"{ns}-{name}-{topic}",
            kafka_ns,
            {
                "observedGeneration": 1,
                "topicName": topic,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}],
            },
        )


def simulate_flink(
    kube: Kube, name: str, ns: str, state: str = "STABLE", savepoint: str | None = None
) -> None:
    for job in JOBS:
        status: dict[str, Any] = {
            "lifecycleState": state,
            "jobStatus": {"state": "RUNNING" if state == "STABLE" else "RECONCILING"},
            "reconciliationStatus": {"state": "DEPLOYED" if state == "STABLE" else "UPGRADING"},
        }
        if savepoint:
            status["jobStatus"]["upgradeSavepointPath"] = f"{savepoint}/{job}"
        kube.patch_status(*FLINK, f"{name}-{job}", ns, status)


def make_ready(kube: Kube, name: str, ns: str, kafka_ns: str) -> dict[str, Any]:
    wait_for(lambda: children_exist(kube, name, ns, kafka_ns), what="children")
    simulate_dependencies(kube, name, ns, kafka_ns)
    wait_for(
        lambda: all(
            (kube.get(*FLINK, f"{name}-{j}", ns) or {}).get("spec", {}).get("job", {}).get("state")
            == "running"
            for j in JOBS
        ),
        what="jobs switched to running once dependencies are ready",
    )
    simulate_flink(kube, name, ns)
    return wait_for(
        lambda: (
            (fp := kube.get(*FP, name, ns))
            and condition(fp, "Ready").get("status") == "True"
            and fp
        ),
        what="Ready=True",
    )
