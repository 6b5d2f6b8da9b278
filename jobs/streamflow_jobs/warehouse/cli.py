"""``streamflow warehouse build`` and ``streamflow feedback import`` (registered by cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

warehouse_app = typer.Typer(help="The medallion warehouse: bronze -> silver -> gold.")
feedback_app = typer.Typer(help="Confirmed verdicts (analysts, chargebacks) for the warehouse.")
console = Console(stderr=True)

Dsn = Annotated[
    str | None,
    typer.Option(help="libpq URL or DSN; default: the database `streamflow infra up` runs"),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=code)


def _dsn(dsn: str | None) -> str:
    from streamflow_jobs.warehouse.build import WarehouseError, local_dsn  # noqa: PLC0415

    if dsn:
        return dsn
    try:
        return local_dsn()
    except WarehouseError as exc:
        raise _fail(str(exc)) from exc


@warehouse_app.command("build")
def build_command(
    dsn: Dsn = None,
    select: Annotated[
        list[str] | None, typer.Option(help="Only these dbt nodes (dbt --select syntax)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="dbt's own log")] = False,
    summary: Annotated[
        Path | None, typer.Option(help="Write what ran, with timings, as JSON here")
    ] = None,
) -> None:
    """Apply the migrations, then build silver and gold with dbt (models and quality checks).
    Exits 1 with the failing checks named when a blocking check fails."""
    from streamflow_jobs.warehouse.build import WarehouseError, build  # noqa: PLC0415

    try:
        report = build(_dsn(dsn), select=select, quiet=not verbose)
    except WarehouseError as exc:
        raise _fail(str(exc)) from exc
    if summary is not None:
        import orjson  # noqa: PLC0415

        tmp = summary.with_name(f".{summary.name}.tmp")
        tmp.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        tmp.replace(summary)
    if report.applied_migrations:
        console.print(f"applied migrations: {', '.join(report.applied_migrations)}")
    for node in report.of("test", "warn"):
        console.print(f"[yellow]warning:[/] {node.name}: {node.message}", highlight=False)
    if not report.ok:
        raise _fail(report.reason(), code=1)
    console.print(f"warehouse built: {report.summary()}", highlight=False)


@feedback_app.command("import")
def import_command(
    input: Annotated[Path, typer.Option("--input", "-i", help="Verdicts, one JSON per line")],
    dsn: Dsn = None,
) -> None:
    """Import confirmed verdicts (transaction_id, is_fraud, optional source and reported_at)
    into bronze.feedback. Idempotent: importing the same file twice changes nothing."""
    import psycopg  # noqa: PLC0415

    from streamflow_jobs.warehouse.feedback import FeedbackError, import_feedback  # noqa: PLC0415

    if not input.is_file():
        raise _fail(f"input file not found: {input}")
    try:
        result = import_feedback(_dsn(dsn), input)
    except FeedbackError as exc:
        raise _fail(str(exc)) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise _fail("bronze.feedback does not exist: run `streamflow warehouse build`") from exc
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot connect to the database: {' '.join(str(exc).split())}") from exc
    console.print(
        f"{result.verdicts} verdicts from {result.lines} lines: {result.inserted} new, "
        f"{result.changed} changed, {result.unchanged} already imported",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(warehouse_app, name="warehouse")
    app.add_typer(feedback_app, name="feedback")
