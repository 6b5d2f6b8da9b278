"""model_training: recent history from the warehouse (silver's transactions + the confirmed
verdicts, the rest counted legitimate) -> `streamflow train --labels` -> a backtest of the
candidate against the live model on the most recent days -> the candidate registered (artifact,
metrics, checksum in ml.model_candidates) only if it is not worse. Promotion is a human change
of the FraudPipeline's `model` section (docs/runbook.md). Wiring only:
streamflow_jobs.warehouse.training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from streamflow_jobs.warehouse import orchestration as o

DAG_ID = "model_training"

with DAG(
    **o.dag_args(
        DAG_ID,
        "@weekly",
        deadline_minutes=180,
        doc=__doc__,
        retries=1,
        params={
            "days": Param(30, type="number", exclusiveMinimum=0, description="history to use"),
            "holdout_days": Param(
                7, type="number", exclusiveMinimum=0, description="backtest window"
            ),
            "seed": Param(7, type="integer"),
            "tolerance": Param(0.005, type="number", minimum=0),
            # The live model and rules (the FraudPipeline's mounted files); empty: shipped defaults.
            "live_model": Param(os.environ.get("STREAMFLOW_LIVE_MODEL", ""), type="string"),
            "rules": Param(os.environ.get("STREAMFLOW_RULES", ""), type="string"),
            "workdir": Param(
                os.environ.get("STREAMFLOW_TRAINING_DIR", "/tmp/streamflow-training"), type="string"
            ),
        },
    )
):

    def _dir(params: dict[str, Any], run_id: str) -> Path:
        return Path(str(params["workdir"])) / run_id.replace(":", "_").replace("+", "_")

    def _opt(value: object) -> Path | None:
        return Path(str(value)) if value else None

    @task
    def export(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        from streamflow_jobs.warehouse.training import export_history  # noqa: PLC0415

        p = params or {}
        out = export_history(
            o.dsn(),
            _dir(p, run_id),
            float(p["days"]),
            float(p["holdout_days"]),
        )
        return {
            "train": str(out.train_events),
            "holdout": str(out.holdout_events),
            "labels": str(out.labels),
            "train_rows": out.train_rows,
            "holdout_rows": out.holdout_rows,
            "labelled": out.labelled,
            "fraud": out.fraud,
            "window": list(out.window),
        }

    @task
    def train(history: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        from streamflow_jobs.warehouse.training import train_candidate  # noqa: PLC0415

        p = params or {}
        if int(history["train_rows"]) < 2:
            raise AirflowSkipException("fewer than two transactions before the backtest window")
        if not int(history.get("fraud", 0)):
            raise AirflowSkipException("no confirmed fraud in the history: nothing to learn from")
        artifact = Path(str(history["train"])).with_name("candidate.json")
        doc = train_candidate(
            Path(str(history["train"])),
            Path(str(history["labels"])),
            artifact,
            int(p["seed"]),
            _opt(p["rules"]),
        )
        return {"artifact": str(artifact), "model_version": doc["model_version"]}

    @task
    def backtest(
        history: dict[str, Any],
        candidate: dict[str, Any],
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from streamflow_jobs.warehouse import training  # noqa: PLC0415

        p = params or {}
        result = training.backtest(
            Path(str(history["holdout"])),
            Path(str(history["labels"])),
            _opt(p["live_model"]),
            Path(str(candidate["artifact"])),
            Path(str(history["holdout"])).parent,
            _opt(p["rules"]),
        )
        accepted, reason = training.not_worse(result, float(p["tolerance"]))
        return {"result": result, "accepted": accepted, "reason": reason}

    @task
    def register(
        history: dict[str, Any], candidate: dict[str, Any], verdict: dict[str, Any]
    ) -> str:
        from streamflow_jobs.model.loader import load_model  # noqa: PLC0415
        from streamflow_jobs.warehouse.training import register as record  # noqa: PLC0415

        if not verdict["accepted"]:
            raise AirflowSkipException(f"candidate not registered: {verdict['reason']}")
        live = os.environ.get("STREAMFLOW_LIVE_MODEL") or None
        return record(
            o.dsn(),
            Path(str(candidate["artifact"])),
            verdict["result"],
            load_model(live).model_version,
            {
                "window": history["window"],
                "train_rows": history["train_rows"],
                "holdout_rows": history["holdout_rows"],
                "labelled": history["labelled"],
                "fraud": history.get("fraud", 0),
                "verdict": verdict["reason"],
            },
        )

    history = export()
    candidate = train(history)
    register(history, candidate, backtest(history, candidate))
