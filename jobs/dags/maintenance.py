"""maintenance: bronze pruned to the topics' retention (only what silver has already loaded),
then VACUUM (ANALYZE) bronze and ANALYZE silver and gold. Wiring only: the logic is
streamflow_jobs.warehouse.retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from streamflow_jobs.warehouse import orchestration as o

DAG_ID = "maintenance"

with DAG(
    **o.dag_args(
        DAG_ID,
        "@daily",
        deadline_minutes=120,
        doc=__doc__,
        # The FraudPipeline's topics.*.retentionHours (defaults: 7, 30 and 30 days).
        params={
            "transactions_hours": Param(168, type="integer", minimum=1),
            "fraud_alerts_hours": Param(720, type="integer", minimum=1),
            "dead_letters_hours": Param(720, type="integer", minimum=1),
        },
    )
):

    @task
    def prune(table: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from streamflow_jobs.warehouse.retention import prune as prune_table  # noqa: PLC0415

        hours = (params or {})[f"{table}_hours"]
        done = prune_table(o.dsn(), table, timedelta(hours=hours))
        return {"table": done.table, "deleted": done.deleted, "cutoff": done.cutoff}

    @task
    def vacuum_analyze() -> list[str]:
        from streamflow_jobs.warehouse.retention import vacuum_analyze as run  # noqa: PLC0415

        return run(o.dsn())

    pruned = [
        prune.override(task_id=f"prune_{t}")(t)
        for t in ("transactions", "fraud_alerts", "dead_letters")
    ]
    pruned >> vacuum_analyze()
