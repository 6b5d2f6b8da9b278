"""The Airflow connection Secret (read by the cncf.kubernetes KubernetesSecretsBackend)."""

from __future__ import annotations

import base64

from streamflow_operator.render import Manifest, Meta, metadata
from streamflow_operator.spec import FraudPipelineSpec


def airflow_namespace(spec: FraudPipelineSpec, meta: Meta) -> str:
    return spec.airflow.namespace or meta.namespace


def secret_name(spec: FraudPipelineSpec, meta: Meta) -> str:
    return f"{meta.namespace}-{meta.name}-airflow-conn"[:253]


def build_connection_secret(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    """Nothing until CNPG's app secret exists: the connection is built from its ``uri``."""
    if meta.app_secret_uri is None:
        return []
    md = metadata(meta, secret_name(spec, meta), airflow_namespace(spec, meta), "airflow")
    md["labels"]["airflow.apache.org/connection-id"] = spec.airflow.connection_id
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": md,
            "type": "Opaque",
            "data": {"value": base64.b64encode(meta.app_secret_uri.encode()).decode()},
        }
    ]
