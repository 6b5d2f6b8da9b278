"""CloudNativePG Cluster (optional), Database with the medallion schemas, migrations Job."""

from __future__ import annotations

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


def build_postgres(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    pg = spec.postgres
    cluster = cluster_name(spec, meta)
    out: list[Manifest] = []
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
