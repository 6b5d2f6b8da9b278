"""warehouse: migrations, then dbt staging -> silver -> gold, one task per model (cosmos), each
model built with its data tests: a failing check fails its task, nothing downstream runs, and
the run fails (the quality gate). The SQL is sql/dbt; this file is wiring only."""

from __future__ import annotations

from airflow.sdk import DAG, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior, TestIndirectSelection
from cosmos.profiles import PostgresUserPasswordProfileMapping

from streamflow_jobs.warehouse import orchestration as o

DAG_ID = "warehouse"
# Tasks are rendered from dbt's manifest (parsed once per version of sql/dbt and cached), so
# parsing this file runs no dbt command.
project = ProjectConfig(
    dbt_project_path=o.dbt_project_dir(), manifest_path=o.dbt_manifest(), project_name="streamflow"
)
profile = ProfileConfig(
    profile_name="streamflow",
    target_name="default",
    profile_mapping=PostgresUserPasswordProfileMapping(
        conn_id=o.CONN_ID, profile_args={"schema": "silver"}
    ),
)
# dbt in the worker's own interpreter (no subprocess); it must be on PATH (the venv's bin/).
# A model's task runs only the tests whose every parent it builds ("cautious"): a check that
# spans models (gold_totals_reconcile, relationships) runs in the final gate, once all is built.
execution = ExecutionConfig(
    invocation_mode=InvocationMode.DBT_RUNNER,
    test_indirect_selection=TestIndirectSelection.CAUTIOUS,
)


def layer(name: str) -> DbtTaskGroup:
    return DbtTaskGroup(
        group_id=name,
        project_config=project,
        profile_config=profile,
        execution_config=execution,
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            select=[f"path:models/{name}"],
            test_behavior=TestBehavior.BUILD,  # `dbt build` per model: the model + its tests
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        operator_args={"install_deps": False},
    )


with DAG(
    **o.dag_args(
        DAG_ID,
        "@hourly",
        deadline_minutes=45,
        doc=__doc__,
    )
):

    @task
    def migrations() -> list[str]:
        from streamflow_jobs.migrate import discover, migrate  # noqa: PLC0415

        return [m.file for m in migrate(o.dsn(), discover())]

    @task
    def quality_gate() -> dict[str, int]:
        """Every check once more on the finished build (the ones spanning models included):
        the run fails naming the failing checks; all results are in silver.quality_results."""
        from streamflow_jobs.warehouse.build import check  # noqa: PLC0415

        report = check(o.dsn())
        if not report.ok:
            raise RuntimeError(report.reason())
        return {s: len(report.of("test", s)) for s in ("pass", "warn")}

    migrations() >> layer("staging") >> layer("silver") >> layer("gold") >> quality_gate()
