"""Run one DAG of the image's DAG folder once with ``dag.test()`` and print each task's state as
JSON on the last line. Mounted into the Airflow image by tests/integration/test_airflow_image.py;
runs with the image's Python and environment (a SQLite metadata database under /tmp)."""

from __future__ import annotations

import json
import os
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.utils import db

db.resetdb()
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
if bag.import_errors:
    sys.exit(f"DAG import errors: {bag.import_errors}")
dag = bag.dags[sys.argv[1]]
# As tests/integration/test_warehouse_dags.py: no retry backoff, and no deadline (Airflow 3.3's
# dag.test() crashes on a successful run of a DAG with one, apache/airflow#73428).
dag.deadline = None
for task in dag.tasks:
    task.retries = 0
run = dag.test()
print(json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}))
