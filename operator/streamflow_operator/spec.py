"""FraudPipeline: spec and status as pydantic models, the one source of the CRD (crds/).

Field names are camelCase in the resource (Kubernetes convention). The ``rules`` section is the
detector's own :class:`~streamflow_jobs.rules.config.RulesConfig`, so what the apiserver accepts
is exactly what the fraud-detector reads. Cross-field rules are CEL (``x-kubernetes-validations``)
so that the apiserver rejects a bad spec with a message naming the field, before the operator runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from streamflow_jobs.rules.config import RulesConfig

GROUP = "streamflow.dev"
VERSION = "v1alpha1"
KIND = "FraudPipeline"
PLURAL = "fraudpipelines"

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
Quantity = Annotated[
    str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$", max_length=32)
]


def _cel(*rules: tuple[str, str], **extra: Any) -> ConfigDict:
    validations: list[Any] = [{"rule": rule, "message": message} for rule, message in rules]
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": validations, **extra},
    )


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ---- Kafka --------------------------------------------------------------------------------------
class TopicSpec(_Spec):
    partitions: int = Field(3, ge=1, le=10_000)
    replicas: int = Field(1, ge=1, le=32)
    retention_hours: int = Field(168, ge=1, le=87_600, description="Kept this long (retention.ms)")


class TopicsSpec(_Spec):
    transactions: TopicSpec = TopicSpec(partitions=3, retention_hours=7 * 24)
    alerts: TopicSpec = TopicSpec(partitions=3, retention_hours=30 * 24)
    metrics: TopicSpec = TopicSpec(partitions=1, retention_hours=24)
    dead_letters: TopicSpec = TopicSpec(partitions=1, retention_hours=30 * 24)

    model_config = _cel(
        (
            "self.deadLetters.retentionHours >= self.transactions.retentionHours",
            "deadLetters.retentionHours must be at least transactions.retentionHours: "
            "a dead letter must outlive the event it explains",
        )
    )


class KafkaSpec(_Spec):
    cluster_name: DnsLabel = Field(description="Strimzi Kafka cluster (label strimzi.io/cluster)")
    namespace: DnsLabel | None = Field(
        None, description="Namespace of the Kafka cluster and its topics; default: the pipeline's"
    )
    topics: TopicsSpec = TopicsSpec()


# ---- Flink --------------------------------------------------------------------------------------
class Resources(_Spec):
    cpu: float = Field(1.0, gt=0, le=64)
    memory: Quantity = "2048m"


class FlinkJobSpec(_Spec):
    enabled: bool = True
    parallelism: int | None = Field(None, ge=1, le=1024, description="Default: flink.parallelism")


class FlinkJobsSpec(_Spec):
    transaction_processor: FlinkJobSpec = FlinkJobSpec()
    fraud_detector: FlinkJobSpec = FlinkJobSpec()
    realtime_aggregator: FlinkJobSpec = FlinkJobSpec()


class FlinkSpec(_Spec):
    image: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Image with Flink, PyFlink and streamflow_jobs"
    )
    flink_version: Literal["v1_20", "v2_0", "v2_1", "v2_2"] = "v2_2"
    parallelism: int = Field(1, ge=1, le=1024)
    task_slots: int = Field(1, ge=1, le=64)
    job_manager: Resources = Resources(cpu=0.5, memory="1024m")
    task_manager: Resources = Resources()
    checkpoint_interval_seconds: int = Field(60, ge=1, le=86_400)
    checkpoint_dir: Annotated[str, Field(pattern=r"^[a-z0-9]+://.+", max_length=1024)] = Field(
        description="execution.checkpointing.dir, e.g. s3://bucket/checkpoints"
    )
    savepoint_dir: Annotated[str, Field(pattern=r"^[a-z0-9]+://.+", max_length=1024)] = Field(
        description="execution.checkpointing.savepoint-dir (savepoint upgrades need it)"
    )
    jobs: FlinkJobsSpec = FlinkJobsSpec()

    model_config = _cel(
        ("self.savepointDir != self.checkpointDir", "savepointDir must differ from checkpointDir"),
        (
            "!has(self.jobs) || !has(self.jobs.fraudDetector) || "
            "!has(self.jobs.fraudDetector.parallelism) || "
            "self.jobs.fraudDetector.parallelism <= self.parallelism * 128",
            "jobs.fraudDetector.parallelism must not exceed 128 x parallelism (max parallelism)",
        ),
    )


# ---- PostgreSQL (CloudNativePG) -----------------------------------------------------------------
class PostgresSpec(_Spec):
    create: bool = Field(True, description="Create a CNPG Cluster, or reference clusterName")
    cluster_name: DnsLabel | None = Field(None, description="Default: <pipeline>-pg")
    instances: int = Field(1, ge=1, le=9)
    storage_size: Quantity = "1Gi"
    database: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "streamflow"
    owner: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "streamflow"
    schemas: list[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]] = Field(
        default_factory=lambda: ["bronze", "silver", "gold"], min_length=1, max_length=32
    )
    migrations_image: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        None, description="Image of the migrations Job; default: flink.image"
    )

    model_config = _cel(
        (
            "self.create || has(self.clusterName)",
            "clusterName is required when create is false (reference an existing cluster)",
        ),
        (
            "['bronze', 'silver', 'gold'].all(s, s in self.schemas)",
            "schemas must include bronze, silver and gold",
        ),
    )


class AirflowSpec(_Spec):
    namespace: DnsLabel | None = Field(None, description="Airflow's namespace; default: pipeline's")
    connection_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,128}$")] = "streamflow_postgres"


class ModelSpec(_Spec):
    config_map_name: DnsLabel | None = Field(
        None,
        description="ConfigMap (key model.json) with a model artifact; default: the "
        "operator publishes its built-in model",
    )
    version: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Expected model_version; the pipeline stalls if the artifact differs"
    )

    model_config = _cel(
        (
            "!has(self.version) || has(self.configMapName)",
            "version pins a model from configMapName: set configMapName too",
        )
    )


class FraudPipelineSpec(_Spec):
    kafka: KafkaSpec
    flink: FlinkSpec
    postgres: PostgresSpec = PostgresSpec()
    airflow: AirflowSpec = AirflowSpec()
    rules: RulesConfig = RulesConfig()
    model: ModelSpec = ModelSpec()
    suspend: bool = Field(False, description="Stop the Flink jobs (with a savepoint)")


# ---- status -------------------------------------------------------------------------------------
class Condition(_Spec):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ChildStatus(_Spec):
    kind: str
    name: str
    namespace: str
    ready: bool
    message: str = ""


class FraudPipelineStatus(_Spec):
    observed_generation: int | None = None
    phase: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    children: list[ChildStatus] = Field(default_factory=list)
    topics_ready: str | None = None
    jobs_running: str | None = None
    model_version: str | None = None
    model_checksum: str | None = None
    last_savepoint: str | None = None
