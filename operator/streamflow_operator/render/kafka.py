"""Strimzi KafkaTopics (kafka.strimzi.io/v1), in the Kafka cluster's namespace."""

from __future__ import annotations

from streamflow_operator.render import Manifest, Meta, metadata
from streamflow_operator.spec import FraudPipelineSpec

TOPICS = ("transactions", "alerts", "metrics", "dead-letters")


def kafka_namespace(spec: FraudPipelineSpec, meta: Meta) -> str:
    return spec.kafka.namespace or meta.namespace


def topic_name(meta: Meta, topic: str) -> str:
    """Kafka's topic name: namespaced and pipeline-scoped, so two pipelines never collide."""
    return f"streamflow.{meta.namespace}.{meta.name}.{topic}"


def resource_name(meta: Meta, topic: str) -> str:
    return f"{meta.namespace}-{meta.name}-{topic}"[:253]


def build_topics(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    ns = kafka_namespace(spec, meta)
    t = spec.kafka.topics
    settings = {
        "transactions": t.transactions,
        "alerts": t.alerts,
        "metrics": t.metrics,
        "dead-letters": t.dead_letters,
    }
    out = []
    for topic in TOPICS:
        cfg = settings[topic]
        md = metadata(meta, resource_name(meta, topic), ns, "kafka")
        md["labels"]["strimzi.io/cluster"] = spec.kafka.cluster_name
        out.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": md,
                "spec": {
                    "topicName": topic_name(meta, topic),
                    "partitions": cfg.partitions,
                    "replicas": cfg.replicas,
                    "config": {
                        "retention.ms": str(cfg.retention_hours * 3_600_000),
                        "min.insync.replicas": str(min(2, cfg.replicas)),
                        "cleanup.policy": "delete",
                    },
                },
            }
        )
    return out
