"""Airflow for the tests: a throwaway AIRFLOW_HOME with a SQLite metadata database and the
project's DAG folder. Importing this module sets the environment, so import it before anything
imports airflow (Airflow reads its configuration once, at import)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parents[1] / "jobs" / "dags"

if "STREAMFLOW_TEST_AIRFLOW_HOME" not in os.environ:
    home = tempfile.mkdtemp(prefix="streamflow-airflow-")
    os.environ["STREAMFLOW_TEST_AIRFLOW_HOME"] = home
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    os.environ["AIRFLOW__COSMOS__ENABLE_CACHE"] = "False"
    os.environ["AIRFLOW__COSMOS__PROPAGATE_LOGS"] = "False"

_migrated = False


def metadata_db() -> None:
    """Create Airflow's metadata database once per process (resetdb: ~2-4 s)."""
    global _migrated
    if not _migrated:
        from airflow.utils import db  # noqa: PLC0415

        db.resetdb()
        _migrated = True


def dagbag() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag  # noqa: PLC0415

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return dict(bag.dags)
