"""What every StreamFlow DAG shares (jobs/dags/ imports it; Airflow imports nothing else of
ours): the connection, default arguments (retries with exponential backoff, a failure callback)
and the deadline alert that replaced SLAs in Airflow 3. Callbacks live here, in an importable
module, because Airflow's triggerer runs deadline callbacks by import path.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

CONN_ID = "streamflow_postgres"
log = logging.getLogger("streamflow.dags")


def dsn(conn_id: str = CONN_ID) -> str:
    """The libpq URL of the warehouse connection: from ``AIRFLOW_CONN_STREAMFLOW_POSTGRES`` or
    the Kubernetes secrets backend (the Secret the operator renders from CNPG's app secret)."""
    from airflow.sdk import BaseHook  # noqa: PLC0415

    conn = BaseHook.get_connection(conn_id)
    user = quote(conn.login or "", safe="")
    password = f":{quote(conn.password, safe='')}" if conn.password else ""
    auth = f"{user}{password}@" if user or password else ""
    port = f":{conn.port}" if conn.port else ""
    database = quote(conn.schema or "", safe="")
    extra = conn.extra_dejson or {}
    query = f"?sslmode={quote(str(extra['sslmode']))}" if "sslmode" in extra else ""
    return f"postgresql://{auth}{conn.host or ''}{port}/{database}{query}"


def on_failure(context: dict[str, Any]) -> None:
    """One line per failed task try: what failed and why (never the connection's URL)."""
    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    first = (str(error).strip().splitlines() or [""])[0] if error else ""
    log.error(
        "streamflow task failed: dag=%s task=%s run=%s try=%s: %s",
        getattr(ti, "dag_id", "?"),
        getattr(ti, "task_id", "?"),
        getattr(ti, "run_id", "?"),
        getattr(ti, "try_number", "?"),
        f"{type(error).__name__}: {first}" if error else "failed",
    )


async def deadline_missed(dag_id: str, minutes: int, **_: Any) -> None:
    """Run by the triggerer when a DAG run is still going ``minutes`` after it was queued."""
    log.error(
        "streamflow deadline missed: dag=%s not finished %s min after it was queued",
        dag_id,
        minutes,
    )


def default_args(retries: int = 3) -> dict[str, Any]:
    return {
        "owner": "streamflow",
        "retries": retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,  # a multiplier in Airflow 3 (1, 2, 4 ... minutes)
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": on_failure,
    }


def deadline(dag_id: str, minutes: int) -> Any:
    """Alert when a run is not done ``minutes`` after it was queued (Airflow 3's SLA)."""
    from airflow.sdk.definitions.callback import AsyncCallback  # noqa: PLC0415
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference  # noqa: PLC0415

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(deadline_missed, kwargs={"dag_id": dag_id, "minutes": minutes}),
    )


def dbt_project_dir() -> Path:
    from streamflow_jobs.warehouse.build import DBT_PROJECT_DIR  # noqa: PLC0415

    return DBT_PROJECT_DIR


def dbt_manifest() -> Path:
    from streamflow_jobs.warehouse.build import manifest  # noqa: PLC0415

    return manifest()


def dag_args(
    dag_id: str,
    schedule: str,
    deadline_minutes: int,
    doc: str | None,
    retries: int = 3,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What every StreamFlow DAG is declared with: one run at a time, no catch-up, retries with
    backoff and the failure callback, a deadline alert."""
    from datetime import datetime  # noqa: PLC0415

    return {
        "dag_id": dag_id,
        "schedule": schedule,
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args(retries),
        "deadline": deadline(dag_id, deadline_minutes),
        "params": params or {},
        "tags": ["streamflow"],
        "doc_md": doc,
    }
