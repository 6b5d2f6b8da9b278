"""FlinkDeployments (flink.apache.org/v1beta1): one per job, savepoint upgrades, RocksDB state.

A change of rules, model or image changes the deployment's spec (the pod template carries the
rules checksum and model version), which the Flink operator turns into stop-with-savepoint ->
redeploy from it. Until the database, migrations and topics are ready the jobs are declared but
suspended, so every child exists at once and the order is kept by ``job.state``.
"""

from __future__ import annotations

from streamflow_operator.render import Manifest, Meta, metadata
from streamflow_operator.render.kafka import kafka_namespace, topic_name
from streamflow_operator.render.model import (
    ANNOTATION_MODEL,
    ANNOTATION_RULES,
    model_config_map,
    rules_checksum,
    rules_config_map,
)
from streamflow_operator.spec import FlinkJobSpec, FraudPipelineSpec

PYFLINK_JAR = {"v1_20": "1.20.3", "v2_0": "2.0.1", "v2_1": "2.1.1", "v2_2": "2.2.1"}
JOBS = ("transaction-processor", "fraud-detector", "realtime-aggregator")
RULES_PATH = "/etc/streamflow/rules/rules.yaml"
MODEL_PATH = "/etc/streamflow/model/model.json"


def deployment_name(meta: Meta, job: str) -> str:
    return f"{meta.name}-{job}"


def _job_spec(spec: FraudPipelineSpec, job: str) -> FlinkJobSpec:
    jobs = spec.flink.jobs
    return {
        "transaction-processor": jobs.transaction_processor,
        "fraud-detector": jobs.fraud_detector,
        "realtime-aggregator": jobs.realtime_aggregator,
    }[job]


def build_flink_deployments(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    f = spec.flink
    bootstrap = f"{spec.kafka.cluster_name}-kafka-bootstrap.{kafka_namespace(spec, meta)}.svc:9092"
    running = meta.dependencies_ready and not spec.suspend
    jar_version = PYFLINK_JAR[f.flink_version]
    out = []
    for job in JOBS:
        job_spec = _job_spec(spec, job)
        if not job_spec.enabled:
            continue  # not rendered: reconcile deletes a FlinkDeployment that is no longer wanted
        module = f"streamflow_jobs.flink.{job.replace('-', '_')}"
        scope = f"{meta.namespace}/{meta.name}/{job}"  # state paths never shared across jobs
        checkpoints = f"{f.checkpoint_dir.rstrip('/')}/{scope}"
        savepoints = f"{f.savepoint_dir.rstrip('/')}/{scope}"
        args = [
            "-pyclientexec",
            "/usr/bin/python3",
            "-pym",
            module,
            "--bootstrap-servers",
            bootstrap,
            "--transactions-topic",
            topic_name(meta, "transactions"),
            "--alerts-topic",
            topic_name(meta, "alerts"),
            "--metrics-topic",
            topic_name(meta, "metrics"),
            "--dead-letter-topic",
            topic_name(meta, "dead-letters"),
            "--rules",
            RULES_PATH,
            "--model",
            MODEL_PATH,
        ]
        out.append(
            {
                "apiVersion": "flink.apache.org/v1beta1",
                "kind": "FlinkDeployment",
                "metadata": metadata(meta, deployment_name(meta, job), meta.namespace, "flink"),
                "spec": {
                    "image": f.image,
                    "flinkVersion": f.flink_version,
                    "serviceAccount": "flink",
                    "flinkConfiguration": {
                        "state.backend.type": "rocksdb",
                        "execution.checkpointing.interval": f"{f.checkpoint_interval_seconds}s",
                        "execution.checkpointing.mode": "EXACTLY_ONCE",
                        "execution.checkpointing.incremental": "true",
                        "execution.checkpointing.dir": checkpoints,
                        "execution.checkpointing.savepoint-dir": savepoints,
                        "taskmanager.numberOfTaskSlots": str(f.task_slots),
                        "kubernetes.operator.job.upgrade.last-state-fallback.enabled": "false",
                    },
                    "jobManager": {
                        "resource": {"cpu": f.job_manager.cpu, "memory": f.job_manager.memory}
                    },
                    "taskManager": {
                        "resource": {"cpu": f.task_manager.cpu, "memory": f.task_manager.memory}
                    },
                    "podTemplate": {
                        "metadata": {
                            "annotations": {
                                ANNOTATION_RULES: rules_checksum(spec),
                                ANNOTATION_MODEL: meta.model_version or "",
                            }
                        },
                        "spec": {
                            "containers": [
                                {
                                    "name": "flink-main-container",
                                    "volumeMounts": [
                                        {
                                            "name": "rules",
                                            "mountPath": "/etc/streamflow/rules",
                                            "readOnly": True,
                                        },
                                        {
                                            "name": "model",
                                            "mountPath": "/etc/streamflow/model",
                                            "readOnly": True,
                                        },
                                    ],
                                }
                            ],
                            "volumes": [
                                {"name": "rules", "configMap": {"name": rules_config_map(meta)}},
                                {
                                    "name": "model",
                                    "configMap": {"name": model_config_map(spec, meta)},
                                },
                            ],
                        },
                    },
                    "job": {
                        "jarURI": f"local:///opt/flink/opt/flink-python-{jar_version}.jar",
                        "entryClass": "org.apache.flink.client.python.PythonDriver",
                        "args": args,
                        "parallelism": job_spec.parallelism or f.parallelism,
                        "upgradeMode": "savepoint",
                        "state": "running" if running else "suspended",
                    },
                },
            }
        )
    return out
