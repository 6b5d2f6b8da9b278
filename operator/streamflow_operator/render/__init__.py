"""Pure functions: a FraudPipeline spec -> the manifests of its children (plain dicts, no I/O).

Each ``build_*`` takes the parsed spec and a :class:`Meta` and returns manifests; ``render_all``
gathers them in apply order. ``streamflow render pipeline.yaml`` prints the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from streamflow_operator.spec import GROUP, KIND, VERSION, FraudPipelineSpec

# Every child carries these; the operator watches what carries PART_OF and proves a child is its
# own by LABEL_PIPELINE_UID (the pipeline's uid: no other object can have it by chance) plus,
# in the pipeline's namespace, a controller ownerReference to the same uid.
LABEL_PIPELINE = f"{GROUP}/pipeline"
LABEL_PIPELINE_UID = f"{GROUP}/pipeline-uid"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "streamflow"
MANAGED_BY = "streamflow-operator"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class PublishedModel:
    """A verified model artifact, published under a content-addressed ConfigMap name."""

    config_map: str
    version: str
    checksum: str
    json: bytes | None = None  # None: already published, nothing to (re)write


@dataclass(frozen=True)
class Meta:
    """Identity of the FraudPipeline being rendered, and facts read from the cluster (passed in
    to keep rendering pure)."""

    name: str
    namespace: str
    uid: str = ""
    app_secret_uri: str | None = None  # CNPG's <cluster>-app secret, key uri (decoded)
    model: PublishedModel | None = None  # what the fraud-detector mounts; None: held back
    # The shadow challenger's model (spec.shadow.model); None: no shadow model runs.
    shadow_model: PublishedModel | None = None
    running: frozenset[str] = frozenset()  # jobs whose dependencies are ready (or already run)

    @property
    def pipeline_label(self) -> str:
        return f"{self.namespace}.{self.name}"


def checksum(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def metadata(
    meta: Meta, name: str, namespace: str, component: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Names, labels and (same namespace only) the owner reference, set in one place."""
    labels = {
        "app.kubernetes.io/name": "streamflow",
        "app.kubernetes.io/instance": meta.name,
        "app.kubernetes.io/component": component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PART_OF,
        LABEL_PIPELINE: meta.name,
    }
    if meta.uid:
        labels[LABEL_PIPELINE_UID] = meta.uid
    md: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
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
