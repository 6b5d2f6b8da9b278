"""CloudNativePG Cluster (optional), Database with the medallion schemas, migrations Job, and
the custom queries CNPG's metrics exporter runs for the warehouse's freshness."""

from __future__ import annotations

import yaml

from streamflow_operator.render import Manifest, Meta, checksum, metadata
from streamflow_operator.spec import FraudPipelineSpec


def cluster_name(spec: FraudPipelineSpec, meta: Meta) -> str:
    return spec.postgres.cluster_name or f"{meta.name}-pg"


def app_secret_name(spec: FraudPipelineSpec, meta: Meta) -> str:
    return f"{cluster_name(spec, meta)}-app"  # written by CNPG for the app owner


def database_name(meta: Meta) -> str:
    return f"{meta.name}-db"


# How long one migrations pod waits for its database before failing (the Job then retries).
MIGRATE_WAIT_SECONDS = 600
# The tool waits for the database itself: the image needs neither a shell nor pg_isready.
MIGRATE_COMMAND = (
    "python",
    "-m",
    "streamflow_jobs.migrate",
    "--database-url-env",
    "DATABASE_URL",
    "--wait",
    str(MIGRATE_WAIT_SECONDS),
)


def migrations_job_name(spec: FraudPipelineSpec, meta: Meta) -> str:
    # A Job's pod template is immutable: a change of command, image or schemas is a new Job
    # (its name carries a checksum of them; the old one is pruned).
    return f"{meta.name}-migrate-{checksum(_migration_inputs(spec))[:8]}"


def _migration_inputs(spec: FraudPipelineSpec) -> dict[str, object]:
    return {
        "command": list(MIGRATE_COMMAND),
        "image": spec.postgres.migrations_image or spec.flink.image,
        "schemas": spec.postgres.schemas,
        "database": spec.postgres.database,
    }


MONITORING_SUFFIX = "-pg-monitoring"


def monitoring_config_map(meta: Meta) -> str:
    return f"{meta.name}{MONITORING_SUFFIX}"


MONITORING_KEY = "queries.yaml"
# CNPG's exporter runs each query as `SET ROLE pg_monitor` in a read-only transaction and names
# the gauges cnpg_<query>_<column>; the functions are sql/migrations/0005_monitoring.sql (ADR 0044).
MONITORING_QUERIES = {
    "streamflow_bronze": {
        "query": "SELECT table_name, newest_age_seconds FROM monitoring.bronze_age()",
        "metrics": [
            {"table_name": {"usage": "LABEL", "description": "Bronze table"}},
            {
                "newest_age_seconds": {
                    "usage": "GAUGE",
                    "description": "Age of the newest row the streaming jobs wrote (seconds)",
                }
            },
        ],
    },
    "streamflow_warehouse": {
        "query": "SELECT layer, lag_seconds FROM monitoring.warehouse_lag()",
        "metrics": [
            {"layer": {"usage": "LABEL", "description": "Warehouse layer (silver, gold)"}},
            {
                "lag_seconds": {
                    "usage": "GAUGE",
                    "description": "Age of the oldest transaction the layer has not taken in "
                    "yet (seconds; 0: up to date)",
                }
            },
        ],
    },
}


def build_monitoring_queries(spec: FraudPipelineSpec, meta: Meta) -> Manifest:
    """The custom queries ConfigMap; our Cluster names it, a referenced one may (runbook)."""
    queries = {
        name: {**q, "target_databases": [spec.postgres.database]}
        for name, q in MONITORING_QUERIES.items()
    }
    md = metadata(meta, monitoring_config_map(meta), meta.namespace, "postgres")
    md.setdefault("labels", {})["cnpg.io/reload"] = ""  # CNPG reloads the queries on change
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": md,
        "data": {MONITORING_KEY: yaml.safe_dump(queries, sort_keys=False, width=100)},
    }


def build_postgres(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    pg = spec.postgres
    cluster = cluster_name(spec, meta)
    out: list[Manifest] = [build_monitoring_queries(spec, meta)]
    if pg.create:
        out.append(
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "metadata": metadata(meta, cluster, meta.namespace, "postgres"),
                "spec": {
                    "instances": pg.instances,
                    "storage": {"size": pg.storage_size},
                    "bootstrap": {"initdb": {"database": pg.database, "owner": pg.owner}},
                    "monitoring": {
                        "customQueriesConfigMap": [
                            {"name": monitoring_config_map(meta), "key": MONITORING_KEY}
                        ]
                    },
                },
            }
        )
    out.append(
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Database",
            "metadata": metadata(meta, database_name(meta), meta.namespace, "postgres"),
            "spec": {
                "name": pg.database,
                "owner": pg.owner,
                "cluster": {"name": cluster},
                "ensure": "present",
                "databaseReclaimPolicy": "retain",
                "schemas": [
                    {"name": s, "owner": pg.owner, "ensure": "present"} for s in pg.schemas
                ],
            },
        }
    )
    image = pg.migrations_image or spec.flink.image
    out.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata(
                meta, migrations_job_name(spec, meta), meta.namespace, "migrations"
            ),
            "spec": {
                "backoffLimit": 6,
                "ttlSecondsAfterFinished": None,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/component": "migrations"}},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "containers": [
                            {
                                "name": "migrate",
                                "image": image,
                                "command": list(MIGRATE_COMMAND),
                                "env": [
                                    {
                                        "name": "DATABASE_URL",
                                        "valueFrom": {
                                            "secretKeyRef": {
                                                "name": app_secret_name(spec, meta),
                                                "key": "uri",
                                            }
                                        },
                                    }
                                ],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        }
    )
    out[-1]["spec"].pop("ttlSecondsAfterFinished")  # keep the finished Job: it is the evidence
    return out
