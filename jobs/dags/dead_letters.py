"""dead_letters: dead letters counted by error type (the run fails, and so alerts, when a type
exceeds the threshold in the last hour), and a re-drive of those whose cause was fixed: their
payload now parses, so they are republished to the transactions topic, each once, recorded in
bronze.dead_letter_redrives. Wiring only: streamflow_jobs.warehouse.dead_letters."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from streamflow_jobs.warehouse import orchestration as o

DAG_ID = "dead_letters"

with DAG(
    **o.dag_args(
        DAG_ID,
        "@hourly",
        deadline_minutes=30,
        doc=__doc__,
        params={
            "threshold": Param(
                100,
                type="integer",
                minimum=0,
                description="dead letters per error type within the window",
            ),
            "window_minutes": Param(60, type="integer", minimum=1),
            "redrive": Param(True, type="boolean"),
            "error_types": Param([], type="array", description="only these types; empty: all"),
            "kafka_bootstrap": Param(
                os.environ.get("STREAMFLOW_KAFKA_BOOTSTRAP", ""), type="string"
            ),
            "topic": Param(
                os.environ.get("STREAMFLOW_TRANSACTIONS_TOPIC", "transactions"), type="string"
            ),
        },
    )
):

    @task
    def count(params: dict[str, Any] | None = None) -> dict[str, int]:
        from streamflow_jobs.warehouse.dead_letters import counts_by_error_type  # noqa: PLC0415

        minutes = int((params or {})["window_minutes"])
        return counts_by_error_type(o.dsn(), timedelta(minutes=minutes))

    @task
    def alert(counts: dict[str, int], params: dict[str, Any] | None = None) -> None:
        from streamflow_jobs.warehouse.dead_letters import over_threshold  # noqa: PLC0415

        threshold = int((params or {})["threshold"])
        over = over_threshold(counts, threshold)
        if over:
            raise RuntimeError(f"dead letters over {threshold} per window: {over}")

    @task
    def redrive(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from streamflow_jobs.warehouse import dead_letters as dl  # noqa: PLC0415

        p = params or {}
        if not p["redrive"]:
            raise AirflowSkipException("re-drive disabled (param redrive=false)")
        candidates = dl.redrivable(o.dsn(), list(p["error_types"]) or None)
        if not candidates:
            return {"candidates": 0, "published": 0}
        if not p["kafka_bootstrap"]:
            raise RuntimeError(
                f"{len(candidates)} dead letters can be re-driven but no Kafka bootstrap is set"
                " (param kafka_bootstrap or STREAMFLOW_KAFKA_BOOTSTRAP)"
            )
        topic = str(p["topic"])
        done = dl.redrive(
            o.dsn(), candidates, topic, dl.kafka_publisher(str(p["kafka_bootstrap"]), topic)
        )
        return {"candidates": done.candidates, "published": done.published, "topic": done.topic}

    alert(count())
    redrive()
