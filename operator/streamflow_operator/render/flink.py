"""FlinkDeployments (flink.apache.org/v1beta1): one per job, savepoint upgrades, RocksDB state.

Each job's deployment carries only what that job uses (:data:`JOB_DEFS`): a rules change is a new
rules ConfigMap name in the fraud-detector's pod template only, so only the fraud-detector is
upgraded (stop-with-savepoint -> redeploy from it); the model likewise. The jobs that write bronze
get the database connection as ``STREAMFLOW_POSTGRES_DSN`` from CloudNativePG's app secret (never
in args or plain text). A job whose dependencies are not ready yet is declared ``suspended``, so
every child exists at once and the order is kept by ``job.state``.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamflow_jobs.flink.args import JOB_TOPICS, MODEL_PATH, RULES_PATH, JobArgs
from streamflow_operator.render import Manifest, Meta, metadata
from streamflow_operator.render.kafka import kafka_namespace, topic_name
from streamflow_operator.render.model import (
    ANNOTATION_MODEL,
    ANNOTATION_RULES,
    MODEL_KEY,
    RULES_KEY,
    rules_checksum,
    rules_config_map,
    shadow_parts,
    shadow_rules_checksum,
    shadow_rules_config_map,
)
from streamflow_operator.render.postgres import app_secret_name
from streamflow_operator.spec import FlinkJobSpec, FraudPipelineSpec

PYFLINK_JAR = {"v1_20": "1.20.3", "v2_0": "2.0.1", "v2_1": "2.1.1", "v2_2": "2.2.1"}
RULES_DIR = "/etc/streamflow/rules"
MODEL_DIR = "/etc/streamflow/model"
SHADOW_RULES_DIR = "/etc/streamflow/shadow-rules"
SHADOW_MODEL_DIR = "/etc/streamflow/shadow-model"
ANNOTATION_SHADOW = "streamflow.dev/shadow"
DSN_ENV = "STREAMFLOW_POSTGRES_DSN"
# Flink's Prometheus reporter (its jar ships in the Flink distribution's plugins/): every
# JobManager and TaskManager serves its metrics, the jobs' `streamflow` counters among them,
# on this port for a PodMonitor (config/monitoring/) to scrape.
METRICS_PORT = 9249
METRICS_CONFIG = {
    "metrics.reporter.prom.factory.class": (
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    ),
    "metrics.reporter.prom.port": str(METRICS_PORT),
}
# What the jobs image needs (config/images/jobs.Containerfile, ADRs 0015 and 0040): pemja and
# PyFlink loaded parent-first, so a job restarted in the same TaskManager does not load pemja's
# native library a second time; the JobManager's artifact copies under /tmp, which is writable
# (an emptyDir, as the Flink log directory), so the image's root filesystem can stay read-only.
IMAGE_CONFIG = {
    "classloader.parent-first-patterns.additional": "pemja.;org.apache.flink.python.",
    "user.artifacts.base-dir": "/tmp/flink-artifacts",
}
SCRATCH_VOLUMES = {"tmp": "/tmp", "flink-log": "/opt/flink/log"}
# The pipeline's topic names (render/kafka.py) and the job argument each is given as.
TOPIC_FIELDS = {
    "alerts": "alerts_topic",
    "metrics": "metrics_topic",
    "dead-letters": "dead_letter_topic",
    "control": "control_topic",
}


@dataclass(frozen=True)
class JobDef:
    """What one streaming job reads and writes: its args, mounts, env and readiness gates."""

    name: str
    topics: tuple[str, ...]
    database: bool = False  # writes bronze
    rules: bool = False
    model: bool = False

    @property
    def module(self) -> str:
        return f"streamflow_jobs.flink.{self.name.replace('-', '_')}"


def _topics(job: str, *extra: str) -> tuple[str, ...]:
    """The topics a job reads or writes: transactions, the ones the jobs' own argument table
    (streamflow_jobs.flink.args.JOB_TOPICS) requires, and ``extra`` optional ones."""
    needed = set(JOB_TOPICS[job])
    return ("transactions", *(t for t, f in TOPIC_FIELDS.items() if f in needed), *extra)


JOB_DEFS = (
    JobDef("transaction-processor", _topics("transaction-processor"), database=True),
    JobDef(
        "fraud-detector",
        _topics("fraud-detector", "control"),
        database=True,
        rules=True,
        model=True,
    ),
    JobDef("realtime-aggregator", _topics("realtime-aggregator")),
)
JOBS = tuple(j.name for j in JOB_DEFS)


def deployment_name(meta: Meta, job: str) -> str:
    return f"{meta.name}-{job}"


def job_spec(spec: FraudPipelineSpec, job: str) -> FlinkJobSpec:
    jobs = spec.flink.jobs
    return {
        "transaction-processor": jobs.transaction_processor,
        "fraud-detector": jobs.fraud_detector,
        "realtime-aggregator": jobs.realtime_aggregator,
    }[job]


def job_args(spec: FraudPipelineSpec, meta: Meta, job: JobDef) -> JobArgs:
    """The job's arguments, as the jobs' own typed definition (streamflow_jobs.flink.args)."""
    bootstrap = f"{spec.kafka.cluster_name}-kafka-bootstrap.{kafka_namespace(spec, meta)}.svc:9092"
    topics = {TOPIC_FIELDS[t]: topic_name(meta, t) for t in job.topics if t in TOPIC_FIELDS}
    shadow_rules, shadow_model = shadow_parts(spec, meta) if job.rules else (False, False)
    if shadow_rules or shadow_model:
        topics["shadow_topic"] = topic_name(meta, "shadow")
    return JobArgs(
        bootstrap_servers=bootstrap,
        transactions_topic=topic_name(meta, "transactions"),
        group_id=f"{meta.namespace}.{meta.name}",
        # Production checks event times against the clock (a dead letter when too far ahead);
        # only the fraud-detector decides.
        max_clock_skew_seconds=spec.rules.event_time.max_clock_skew_seconds if job.rules else 0,
        rules=RULES_PATH if job.rules else None,
        model=MODEL_PATH if job.model else None,
        shadow_rules=f"{SHADOW_RULES_DIR}/{RULES_KEY}" if shadow_rules else None,
        shadow_model=f"{SHADOW_MODEL_DIR}/{MODEL_KEY}" if shadow_model else None,
        **topics,  # type: ignore[arg-type]
    )


def _args(spec: FraudPipelineSpec, meta: Meta, job: JobDef) -> list[str]:
    argv = ["-pyclientexec", "/usr/bin/python3", "-pym", job.module]
    return argv + job_args(spec, meta, job).to_argv()


def _pod_template(spec: FraudPipelineSpec, meta: Meta, job: JobDef) -> Manifest:
    container: Manifest = {
        "name": "flink-main-container",
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
    }
    mounts, volumes, annotations = [], [], {}
    if job.rules:
        annotations[ANNOTATION_RULES] = rules_checksum(spec)
        mounts.append({"name": "rules", "mountPath": RULES_DIR, "readOnly": True})
        volumes.append({"name": "rules", "configMap": {"name": rules_config_map(spec, meta)}})
    if job.model and meta.model is not None:
        annotations[ANNOTATION_MODEL] = meta.model.version
        mounts.append({"name": "model", "mountPath": MODEL_DIR, "readOnly": True})
        volumes.append({"name": "model", "configMap": {"name": meta.model.config_map}})
    shadow_rules, shadow_model = shadow_parts(spec, meta) if job.rules else (False, False)
    shadow: list[str] = []
    if shadow_rules:
        shadow.append(f"rules {shadow_rules_checksum(spec)}")
        mounts.append({"name": "shadow-rules", "mountPath": SHADOW_RULES_DIR, "readOnly": True})
        volumes.append(
            {"name": "shadow-rules", "configMap": {"name": shadow_rules_config_map(spec, meta)}}
        )
    if shadow_model and meta.shadow_model is not None:
        shadow.append(f"model {meta.shadow_model.version}")
        mounts.append({"name": "shadow-model", "mountPath": SHADOW_MODEL_DIR, "readOnly": True})
        volumes.append(
            {"name": "shadow-model", "configMap": {"name": meta.shadow_model.config_map}}
        )
    if shadow:
        annotations[ANNOTATION_SHADOW] = ", ".join(shadow)
    if job.database:
        container["env"] = [
            {
                "name": DSN_ENV,
                "valueFrom": {"secretKeyRef": {"name": app_secret_name(spec, meta), "key": "uri"}},
            }
        ]
    for name, path in SCRATCH_VOLUMES.items():
        mounts.append({"name": name, "mountPath": path})
        volumes.append({"name": name, "emptyDir": {}})
    container["volumeMounts"] = mounts
    template: Manifest = {"spec": {"containers": [container], "volumes": volumes}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return template


def build_flink_deployments(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    f = spec.flink
    jar_version = PYFLINK_JAR[f.flink_version]
    out = []
    for job in JOB_DEFS:
        if not job_spec(spec, job.name).enabled:
            continue  # not rendered: reconcile deletes a FlinkDeployment that is no longer wanted
        if job.model and meta.model is None:
            continue  # no valid model was ever published: held back (status says why)
        scope = f"{meta.namespace}/{meta.name}/{job.name}"  # state paths never shared across jobs
        running = job.name in meta.running and not spec.suspend
        out.append(
            {
                "apiVersion": "flink.apache.org/v1beta1",
                "kind": "FlinkDeployment",
                "metadata": metadata(
                    meta, deployment_name(meta, job.name), meta.namespace, "flink"
                ),
                "spec": {
                    "image": f.image,
                    "flinkVersion": f.flink_version,
                    "serviceAccount": "flink",
                    "flinkConfiguration": {
                        "state.backend.type": "rocksdb",
                        "execution.checkpointing.interval": f"{f.checkpoint_interval_seconds}s",
                        "execution.checkpointing.mode": "EXACTLY_ONCE",
                        "execution.checkpointing.incremental": "true",
                        "execution.checkpointing.dir": f"{f.checkpoint_dir.rstrip('/')}/{scope}",
                        "execution.checkpointing.savepoint-dir": (
                            f"{f.savepoint_dir.rstrip('/')}/{scope}"
                        ),
                        "taskmanager.numberOfTaskSlots": str(f.task_slots),
                        "kubernetes.operator.job.upgrade.last-state-fallback.enabled": "false",
                        **METRICS_CONFIG,
                        **IMAGE_CONFIG,
                    },
                    "jobManager": {
                        "resource": {"cpu": f.job_manager.cpu, "memory": f.job_manager.memory}
                    },
                    "taskManager": {
                        "resource": {"cpu": f.task_manager.cpu, "memory": f.task_manager.memory}
                    },
                    "podTemplate": _pod_template(spec, meta, job),
                    "job": {
                        "jarURI": f"local:///opt/flink/opt/flink-python-{jar_version}.jar",
                        "entryClass": "org.apache.flink.client.python.PythonDriver",
                        "args": _args(spec, meta, job),
                        "parallelism": job_spec(spec, job.name).parallelism or f.parallelism,
                        "upgradeMode": "savepoint",
                        "state": "running" if running else "suspended",
                    },
                },
            }
        )
    return out
