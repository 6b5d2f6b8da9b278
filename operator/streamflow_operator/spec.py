"""FraudPipeline: spec and status as pydantic models, the one source of the CRD (crds/).

Field names are camelCase in the resource (Kubernetes convention). The ``rules`` section is the
detector's own :class:`~streamflow_jobs.rules.config.RulesConfig`, so what the apiserver accepts
is what the fraud-detector reads; bounds that only the resource needs (how much of a blacklist
it may carry inline) are added here and in the CRD, never in RulesConfig. Cross-field rules are
CEL (``x-kubernetes-validations``): the apiserver rejects a bad spec with a message naming the
field, and ``streamflow render`` evaluates the very same expressions locally (cel.py).
Every field has a description: ``kubectl explain fraudpipeline.spec`` is the reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from streamflow_jobs.rules.config import RulesConfig

GROUP = "streamflow.dev"
VERSION = "v1alpha1"
KIND = "FraudPipeline"
PLURAL = "fraudpipelines"

# Child names are derived from the pipeline's name; the longest, "<name>-transaction-processor"
# plus the Flink operator's "-rest" Service suffix, must stay a 63-character DNS label.
MAX_NAME_LENGTH = 36
# The resource stays small whatever it holds (kubectl's last-applied annotation, etcd's object
# limit, the rules ConfigMap): a blacklist carried inline is bounded. Larger lists are data: they
# go through the control topic the fraud-detector reads at run time (docs/operator.md).
MAX_INLINE_BLACKLIST = 1000
MAX_BLACKLIST_ID_LENGTH = 64

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
Quantity = Annotated[
    str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$", max_length=32)
]
# An OCI image reference: [registry[:port]/]path[:tag][@digest], lower-case path components.
IMAGE_PATTERN = (
    r"^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
Image = Annotated[str, Field(pattern=IMAGE_PATTERN, min_length=1, max_length=512)]
StateDir = Annotated[str, Field(pattern=r"^[a-z0-9]+://.+", max_length=1024)]
PgName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


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
    """A Kafka topic declared as a Strimzi KafkaTopic."""

    partitions: int = Field(3, ge=1, le=10_000, description="Number of partitions")
    replicas: int = Field(1, ge=1, le=32, description="Replication factor")
    retention_hours: int = Field(168, ge=1, le=87_600, description="Kept this long (retention.ms)")


class ControlTopicSpec(_Spec):
    """The compacted control topic: blacklist changes reach the running fraud-detector through
    it (broadcast state), the latest value per key kept forever."""

    partitions: int = Field(
        1, ge=1, le=10_000, description="Number of partitions (1 keeps every change in order)"
    )
    replicas: int = Field(1, ge=1, le=32, description="Replication factor")


class TopicsSpec(_Spec):
    """The pipeline's topics; Kafka names are streamflow.<namespace>.<pipeline>.<topic>."""

    transactions: TopicSpec = Field(
        TopicSpec(partitions=3, retention_hours=7 * 24),
        description="Incoming payment transactions",
    )
    alerts: TopicSpec = Field(
        TopicSpec(partitions=3, retention_hours=30 * 24), description="Fraud alerts"
    )
    metrics: TopicSpec = Field(
        TopicSpec(partitions=1, retention_hours=24), description="Real-time per-store metrics"
    )
    dead_letters: TopicSpec = Field(
        TopicSpec(partitions=1, retention_hours=30 * 24),
        description="Events that failed, with their error and original payload",
    )
    control: ControlTopicSpec = Field(
        ControlTopicSpec(),
        description="Compacted control topic (blacklist changes at run time)",
    )

    model_config = _cel(
        (
            "self.deadLetters.retentionHours >= self.transactions.retentionHours",
            "deadLetters.retentionHours must be at least transactions.retentionHours: "
            "a dead letter must outlive the event it explains",
        )
    )


class KafkaSpec(_Spec):
    """Where the topics live."""

    cluster_name: DnsLabel = Field(description="Strimzi Kafka cluster (label strimzi.io/cluster)")
    namespace: DnsLabel | None = Field(
        None, description="Namespace of the Kafka cluster and its topics; default: the pipeline's"
    )
    topics: TopicsSpec = Field(TopicsSpec(), description="Partitions, replicas and retention")


# ---- Flink --------------------------------------------------------------------------------------
class Resources(_Spec):
    """CPU and memory of a Flink process."""

    cpu: float = Field(1.0, gt=0, le=64, description="CPU cores")
    memory: Quantity = Field("2048m", description="Memory, as Flink reads it (e.g. 2048m)")


class FlinkJobSpec(_Spec):
    """One streaming job (one FlinkDeployment)."""

    enabled: bool = Field(True, description="Run this job; false removes its FlinkDeployment")
    parallelism: int | None = Field(None, ge=1, le=1024, description="Default: flink.parallelism")


class FlinkJobsSpec(_Spec):
    """The three streaming jobs."""

    transaction_processor: FlinkJobSpec = Field(
        FlinkJobSpec(), description="Parses and validates transactions into bronze"
    )
    fraud_detector: FlinkJobSpec = Field(
        FlinkJobSpec(), description="Per-customer rules and model: the alerts"
    )
    realtime_aggregator: FlinkJobSpec = Field(
        FlinkJobSpec(), description="Per-store windows: the metrics topic"
    )


class FlinkSpec(_Spec):
    """The Flink jobs, run by the Flink Kubernetes Operator (one FlinkDeployment per job)."""

    image: Image = Field(description="Image with Flink, PyFlink and streamflow_jobs")
    flink_version: Literal["v1_20", "v2_0", "v2_1", "v2_2"] = Field(
        "v2_2", description="Flink version of the image (FlinkDeployment flinkVersion)"
    )
    parallelism: int = Field(1, ge=1, le=1024, description="Default parallelism of every job")
    task_slots: int = Field(1, ge=1, le=64, description="Task slots per TaskManager")
    job_manager: Resources = Field(
        Resources(cpu=0.5, memory="1024m"), description="JobManager resources"
    )
    task_manager: Resources = Field(Resources(), description="TaskManager resources")
    checkpoint_interval_seconds: int = Field(
        60, ge=1, le=86_400, description="Exactly-once checkpoint interval"
    )
    checkpoint_dir: StateDir = Field(
        description="execution.checkpointing.dir, e.g. s3://bucket/checkpoints"
    )
    savepoint_dir: StateDir = Field(
        description="execution.checkpointing.savepoint-dir (savepoint upgrades need it)"
    )
    jobs: FlinkJobsSpec = Field(FlinkJobsSpec(), description="Per-job switches and parallelism")

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
    """The warehouse: a CloudNativePG Cluster (created or referenced) and its Database."""

    create: bool = Field(True, description="Create a CNPG Cluster, or reference clusterName")
    cluster_name: DnsLabel | None = Field(None, description="Default: <pipeline>-pg")
    instances: int = Field(1, ge=1, le=9, description="PostgreSQL instances (created cluster)")
    storage_size: Quantity = Field("1Gi", description="Volume size per instance (created cluster)")
    database: PgName = Field("streamflow", description="Database name")
    owner: PgName = Field("streamflow", description="Owner role of the database and schemas")
    schemas: list[PgName] = Field(
        default_factory=lambda: ["bronze", "silver", "gold"],
        min_length=1,
        max_length=32,
        description="Schemas to create (must include bronze, silver and gold)",
    )
    migrations_image: Image | None = Field(
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
    """The Airflow connection (a Secret read by Airflow's KubernetesSecretsBackend)."""

    namespace: DnsLabel | None = Field(None, description="Airflow's namespace; default: pipeline's")
    connection_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,128}$")] = Field(
        "streamflow_postgres", description="Airflow connection id"
    )


class ModelSpec(_Spec):
    """The anomaly model mounted into the fraud-detector."""

    config_map_name: DnsLabel | None = Field(
        None,
        description="ConfigMap (key model.json, label app.kubernetes.io/part-of=streamflow) with "
        "a model artifact; default: the built-in model",
    )
    version: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Expected model_version; an artifact that differs is refused"
    )

    model_config = _cel(
        (
            "!has(self.version) || has(self.configMapName)",
            "version pins a model from configMapName: set configMapName too",
        )
    )


class ShadowSpec(_Spec):
    """A challenger run beside the live fraud-detector on the same events, with its own
    per-customer state: its verdicts go to the shadow topic and bronze, nothing acts on them."""

    rules: RulesConfig | None = Field(
        None,
        description="The challenger's rules: the fields given here override the live rules "
        "(spec.rules), the others keep the live values; default: the live rules",
    )
    model: ModelSpec | None = Field(
        None, description="The challenger's model; default: the live model"
    )

    model_config = _cel(
        (
            "has(self.rules) || has(self.model)",
            "a shadow needs rules and/or a model to try",
        )
    )


def _overlay(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _overlay(out[key], value) if nested else value
    return out


class FraudPipelineSpec(_Spec):
    """The whole fraud-detection platform, declared once."""

    def shadow_rules(self) -> RulesConfig | None:
        """The challenger's effective rules: spec.shadow.rules' given fields over spec.rules."""
        if self.shadow is None or self.shadow.rules is None:
            return None
        patch = self.shadow.rules.model_dump(mode="json", exclude_unset=True)
        return RulesConfig.model_validate(_overlay(self.rules.model_dump(mode="json"), patch))

    kafka: KafkaSpec = Field(description="Kafka topics (Strimzi)")
    flink: FlinkSpec = Field(description="Streaming jobs (Flink Kubernetes Operator)")
    postgres: PostgresSpec = Field(PostgresSpec(), description="Warehouse (CloudNativePG)")
    airflow: AirflowSpec = Field(AirflowSpec(), description="Airflow connection")
    rules: RulesConfig = Field(
        RulesConfig(), description="Fraud rules and blend, as the fraud-detector reads them"
    )
    model: ModelSpec = Field(ModelSpec(), description="Anomaly model")
    shadow: ShadowSpec | None = Field(
        None,
        description="A challenger (rules and/or model) run in shadow by the fraud-detector",
    )
    suspend: bool = Field(False, description="Stop the Flink jobs (with a savepoint)")

    @model_validator(mode="after")
    def _inline_blacklist_bounded(self) -> FraudPipelineSpec:
        for name in ("customers", "stores"):
            values: list[str] = getattr(self.rules.blacklist, name)
            if len(values) > MAX_INLINE_BLACKLIST:
                raise ValueError(
                    f"rules.blacklist.{name}: {len(values)} entries; a FraudPipeline holds at "
                    f"most {MAX_INLINE_BLACKLIST} (publish larger lists to the control topic)"
                )
            if any(len(v) > MAX_BLACKLIST_ID_LENGTH for v in values):
                raise ValueError(
                    f"rules.blacklist.{name}: ids are at most {MAX_BLACKLIST_ID_LENGTH} characters"
                )
        return self


# Descriptions of RulesConfig fields that carry none (RulesConfig belongs to the detector; the CRD
# generator fills these in so that every field of the resource is explained).
RULES_FIELD_HELP = {
    "enabled": "Evaluate this rule",
    "windowSeconds": "Length of the sliding event-time window, in seconds",
    "maxSpeedKmh": "Alert above this implied speed between two transactions (km/h)",
    "maxStdDevs": "Alert when the hour is more than this many standard deviations away",
    "minHistory": "Transactions needed before the rule applies",
    "customers": "Blacklisted customer ids (larger lists: the control topic)",
    "stores": "Blacklisted store ids (larger lists: the control topic)",
}


# ---- status -------------------------------------------------------------------------------------
ConditionType = Literal[
    "Ready",
    "Reconciling",
    "Stalled",
    "ModelReady",
    "DatabaseReady",
    "MigrationsReady",
    "KafkaReady",
    "AirflowReady",
    "FlinkReady",
]


class Condition(_Spec):
    """A kstatus condition."""

    type: ConditionType = Field(description="Ready, Reconciling, Stalled or a component")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown")
    reason: str = Field(description="One CamelCase word")
    message: str = Field("", description="What holds it, naming the child")
    last_transition_time: str | None = Field(None, description="When status last changed")
    observed_generation: int | None = Field(None, description="Generation this was computed for")


class ChildStatus(_Spec):
    """One child object and its health."""

    kind: str = Field(description="Kind of the child")
    name: str = Field(description="Name of the child")
    namespace: str = Field(description="Namespace of the child")
    ready: bool = Field(description="Whether the child is ready")
    message: str = Field("", description="Its health, in words")


class FraudPipelineStatus(_Spec):
    """What the operator observed; written by the operator only."""

    observed_generation: int | None = Field(None, description="Generation of the spec observed")
    phase: (
        Literal["Progressing", "Upgrading", "Ready", "Suspended", "Stalled", "Terminating"] | None
    ) = Field(None, description="Summary, derived from the conditions")
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions")
    children: list[ChildStatus] = Field(default_factory=list, description="Every child's health")
    topics_ready: str | None = Field(None, description="Ready topics / all topics")
    jobs_running: str | None = Field(None, description="Running jobs / all jobs")
    model_version: str | None = Field(None, description="Model the fraud-detector runs")
    model_checksum: str | None = Field(None, description="Checksum of that model")
    shadow_rules_version: str | None = Field(
        None, description="Rules version of the challenger run in shadow"
    )
    shadow_model_version: str | None = Field(
        None, description="Model of the challenger run in shadow"
    )
    last_savepoint: str | None = Field(None, description="Savepoint of the last upgrade")
