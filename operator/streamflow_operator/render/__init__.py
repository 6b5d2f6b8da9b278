"""Pure functions: a FraudPipeline spec -> the manifests of its children (plain dicts, no I/O).

Each ``build_*`` takes the parsed spec and a :class:`Meta` and returns manifests; ``render_all``
gathers them in apply order. ``streamflow render pipeline.yaml`` prints the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamflow_operator.spec import GROUP, KIND, VERSION, FraudPipelineSpec

LABEL_PIPELINE = f"{GROUP}/pipeline"
LABEL_COMPONENT = f"{GROUP}/component"
MANAGED_BY = "streamflow-operator"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Meta:
    """Identity of the FraudPipeline being rendered, and facts read from the cluster."""

    name: str
    namespace: str
    uid: str = ""
    # Inputs that come from other objects (read by reconcile, passed in to keep render pure).
    app_secret_uri: str | None = None  # CNPG's <cluster>-app secret, key uri (decoded)
    model_json: bytes | None = None  # the model artifact to publish (built-in or referenced)
    model_version: str | None = None
    dependencies_ready: bool = False  # database, migrations and topics ready: start the jobs
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline_label(self) -> str:
        return f"{self.namespace}.{self.name}"


def checksum(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def metadata(
    meta: Meta, name: str, namespace: str, component: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Names, labels and (same namespace only) the owner reference, set in one place."""
    md: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": "streamflow",
            "app.kubernetes.io/instance": meta.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            LABEL_PIPELINE: meta.pipeline_label,
            LABEL_COMPONENT: component,
            **meta.extra_labels,
        },
    }
    if annotations:
        md["annotations"] = annotations
    # ownerReferences cannot cross namespaces: those children are deleted by our finalizer.
    if namespace == meta.namespace and meta.uid:
        md["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return md


def render_all(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    """Every child, in apply order (config first, then data stores, topics, Flink jobs)."""
    from streamflow_operator.render import airflow, flink, kafka, model, postgres  # noqa: PLC0415

    children: list[Manifest] = []
    children += model.build_config_maps(spec, meta)
    children += postgres.build_postgres(spec, meta)
    children += kafka.build_topics(spec, meta)
    children += airflow.build_connection_secret(spec, meta)
    children += flink.build_flink_deployments(spec, meta)
    return children
