"""The batch half of the platform: the medallion warehouse's build (migrations + dbt), feedback
import, dead-letter monitoring and re-drive, retention, and the model-training steps. The
Airflow DAGs (jobs/dags/) and the ``streamflow warehouse|feedback`` commands call these same
functions; nothing here imports Airflow."""
