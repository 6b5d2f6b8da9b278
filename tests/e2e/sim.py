"""Stand-ins for Strimzi, the Flink operator and CloudNativePG: they write children's statuses
the way those operators do, so the FraudPipeline's own status logic runs for real.

Also a command (the README's way to see a pipeline become Ready on the local control plane):

    uv run python -m tests.e2e.sim payments --namespace fraud --kafka-namespace kafka
"""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from typing import Any

from kubernetes.dynamic.exceptions import ConflictError

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
        and _config_map_exists(kube, ns, f"{name}-rules")
    )


def _config_map_exists(kube: Kube, ns: str, prefix: str) -> bool:
    """The rules ConfigMap carries a content hash in its name."""
    return any(c["metadata"]["name"].startswith(prefix) for c in kube.list("v1", "ConfigMap", ns))


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
    uri = f"postgresql://streamflow:s3cret@{name}-pg-rw.{ns}:5432/streamflow"
    with contextlib.suppress(ConflictError):  # the command may run twice
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                # As CloudNativePG writes it (pkg/specs/secrets.go): these labels, key uri.
                "metadata": {
                    "name": f"{name}-pg-app",
                    "namespace": ns,
                    "labels": {"cnpg.io/userType": "app", "cnpg.io/reload": "true"},
                },
                "type": "kubernetes.io/basic-auth",
                "data": {
                    "username": base64.b64encode(b"streamflow").decode(),
                    "password": base64.b64encode(b"s3cret").decode(),
                    "uri": base64.b64encode(uri.encode()).decode(),
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
    # Read the clock again: the Job controller may have started the Job after `t`, and the
    # apiserver refuses a completion before the start.
    t = now()
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
    for topic in kube.list(*TOPIC, kafka_ns):
        if not topic["metadata"]["name"].startswith(f"{ns}-{name}-"):
            continue
        kube.patch_status(
            *TOPIC,
            topic["metadata"]["name"],
            kafka_ns,
            {
                "observedGeneration": topic["metadata"]["generation"],
                "topicName": topic["spec"]["topicName"],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}],
            },
        )


def simulate_flink(
    kube: Kube,
    name: str,
    ns: str,
    state: str = "STABLE",
    savepoint: str | None = None,
    jobs: tuple[str, ...] = JOBS,
) -> None:
    """Write each FlinkDeployment's status as the Flink operator does once it has acted on the
    deployment's current spec (``observedGeneration`` = ``metadata.generation``)."""
    for job in jobs:
        live = kube.get(*FLINK, f"{name}-{job}", ns)
        if live is None:
            continue
        status: dict[str, Any] = {
            "observedGeneration": live["metadata"]["generation"],
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


def model_config_map(name: str, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A model artifact published as `make publish-model` does: key model.json, labelled so that
    the operator watches it."""
    import orjson  # noqa: PLC0415

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "streamflow"},
        },
        "data": {"model.json": orjson.dumps(doc).decode()},
    }


def main(argv: list[str] | None = None) -> None:
    """Simulate the children's operators for one FraudPipeline until it is Ready."""
    import argparse  # noqa: PLC0415
    import os  # noqa: PLC0415

    from kubernetes import client, config  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tests.e2e.sim", description=main.__doc__)
    parser.add_argument("name", help="the FraudPipeline's name")
    parser.add_argument("--namespace", "-n", required=True)
    parser.add_argument("--kafka-namespace", required=True)
    args = parser.parse_args(argv)
    config.load_kube_config(os.environ.get("KUBECONFIG"))
    fp = make_ready(Kube(client.ApiClient()), args.name, args.namespace, args.kafka_namespace)
    print(f"{args.namespace}/{args.name}: {condition(fp, 'Ready').get('message')}")


if __name__ == "__main__":
    main()
