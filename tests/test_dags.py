"""The Airflow DAGs import, and are wired as the runbook says (no database needed)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import airflow_env

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    return airflow_env.dagbag()


def test_every_dag_imports(dags: dict[str, Any]) -> None:
    assert set(dags) == {"warehouse", "maintenance", "dead_letters", "model_training"}


def test_the_warehouse_dag_has_a_task_per_model_in_layers_then_the_gate(
    dags: dict[str, Any],
) -> None:
    from streamflow_jobs.warehouse.build import DBT_PROJECT_DIR  # noqa: PLC0415

    dag = dags["warehouse"]
    models = {
        layer: sorted(p.stem for p in (DBT_PROJECT_DIR / "models" / layer).glob("*.sql"))
        for layer in ("staging", "silver", "gold")
    }
    tasks = {t.task_id for t in dag.tasks}
    for layer, names in models.items():
        assert {f"{layer}.{n}_model_build" for n in names} <= tasks, layer
    assert len(tasks) == 2 + sum(map(len, models.values()))  # + migrations, quality_gate
    # Layers in order: every silver task waits for staging, gold for silver, the gate for gold.
    silver = dag.get_task("silver.transactions_model_build")
    assert dag.get_task("staging.stg_transactions_model_build").task_id in {
        t.task_id for t in silver.get_flat_relatives(upstream=True)
    }
    gate = dag.get_task("quality_gate")
    upstream = {t.task_id for t in gate.get_flat_relatives(upstream=True)}
    assert tasks - {"quality_gate"} <= upstream


def test_retries_backoff_failure_callbacks_and_deadlines(dags: dict[str, Any]) -> None:
    from streamflow_jobs.warehouse import orchestration  # noqa: PLC0415

    for dag in dags.values():
        assert dag.max_active_runs == 1 and not dag.catchup
        assert dag.deadline, dag.dag_id
        for t in dag.tasks:
            assert t.retries >= 1, (dag.dag_id, t.task_id)
            assert t.retry_exponential_backoff == 2.0
            assert t.max_retry_delay == timedelta(minutes=30)
            callbacks = t.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert orchestration.on_failure in callbacks, (dag.dag_id, t.task_id)


def test_the_failure_callback_is_one_line_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    from streamflow_jobs.warehouse.orchestration import on_failure  # noqa: PLC0415

    class TI:
        dag_id, task_id, run_id, try_number = "warehouse", "quality_gate", "r1", 2

    on_failure({"ti": TI(), "exception": RuntimeError("quality gate failed: x (3 failing)\nmore")})
    (record,) = caplog.records
    assert record.getMessage() == (
        "streamflow task failed: dag=warehouse task=quality_gate run=r1 try=2: "
        "RuntimeError: quality gate failed: x (3 failing)"
    )


def test_the_connection_comes_from_the_operators_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret the operator renders (label airflow.apache.org/connection-id, key value) is
    what the cncf.kubernetes KubernetesSecretsBackend reads; the DAGs get a libpq URL from it."""
    from airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend import (  # noqa: PLC0415
        KubernetesSecretsBackend,
    )
    from kubernetes.client import ApiClient  # noqa: PLC0415

    from streamflow_jobs.warehouse import orchestration  # noqa: PLC0415
    from streamflow_operator.render import Meta  # noqa: PLC0415
    from streamflow_operator.render.airflow import build_connection_secret  # noqa: PLC0415
    from streamflow_operator.spec import FraudPipelineSpec  # noqa: PLC0415

    uri = "postgresql://app:p%40ss%3Aw0rd@payments-db-rw.fraud:5432/app"
    sample = Path(__file__).resolve().parents[1] / "config" / "samples" / "fraudpipeline.yaml"
    spec = FraudPipelineSpec.model_validate(yaml.safe_load(sample.read_text())["spec"])
    (secret,) = build_connection_secret(spec, Meta(name="p", namespace="fraud", app_secret_uri=uri))
    assert secret["metadata"]["labels"]["airflow.apache.org/connection-id"] == orchestration.CONN_ID

    class Core:  # the apiserver's answer, deserialised exactly as the client would
        def list_namespaced_secret(self, namespace: str, label_selector: str, **_: Any) -> Any:
            labels = secret["metadata"]["labels"]
            match = secret["metadata"]["namespace"] == namespace
            for term in label_selector.split(","):  # "key=value" and "!key", as the backend asks
                if term.startswith("!"):
                    match = match and term[1:] not in labels
                else:
                    key, _, value = term.partition("=")
                    match = match and labels.get(key) == value
            doc = {"apiVersion": "v1", "kind": "SecretList", "items": [secret] if match else []}
            response = type("R", (), {"data": json.dumps(doc)})()
            return ApiClient().deserialize(response, "V1SecretList")

    backend = KubernetesSecretsBackend(namespace=secret["metadata"]["namespace"])
    backend.__dict__["client"] = Core()  # in-cluster config is not available here
    value = backend.get_conn_value(orchestration.CONN_ID)
    assert value == uri == base64.b64decode(secret["data"]["value"]).decode()
    monkeypatch.setenv("AIRFLOW_CONN_STREAMFLOW_POSTGRES", value)
    assert orchestration.dsn() == uri
