"""``streamflow infra up|down|status`` and ``streamflow live``: the streaming data plane's CLI.

Registered on the main app by :func:`register` (two lines in cli.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streamflow_jobs.cli_options import ShadowModel, ShadowRules

console = Console(stderr=True)
infra_app = typer.Typer(
    help="The local Kafka broker, PostgreSQL and Flink cluster (state under .infra/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _print_status(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        return
    out = Console()
    if "kafka" not in state:
        out.print("nothing started yet: `streamflow infra up`")
        return
    rows = [
        ("kafka", state["kafka"].get("running"), state["kafka"].get("bootstrap")),
        ("postgres", state["postgres"].get("running"), _redact(state["postgres"].get("dsn"))),
        ("flink", state.get("flink", {}).get("running"), state.get("flink", {}).get("rest")),
    ]
    for name, running, where in rows:
        mark = "[green]running[/]" if running else "[red]stopped[/]"
        out.print(f"  {name:<9} {mark:<20} {where}")
    out.print(f"  state: {state.get('base')}/state.json")


def _redact(dsn: str | None) -> str:
    if not dsn or "@" not in dsn:
        return dsn or ""
    head, _, tail = dsn.partition("@")
    scheme, _, user = head.rpartition("//")
    return f"{scheme}//{user.split(':')[0]}:***@{tail}"


@infra_app.command("up")
def infra_up(
    taskmanagers: Annotated[int, typer.Option(min=1, max=8, help="Flink TaskManagers")] = 1,
    slots: Annotated[int, typer.Option(min=1, max=16, help="Slots per TaskManager")] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print the state as JSON")] = False,
) -> None:
    """Start Kafka, PostgreSQL and Flink on 127.0.0.1 (what is running already is kept)."""
    from streamflow_jobs import infra  # noqa: PLC0415

    try:
        state = infra.up(taskmanagers=taskmanagers, slots=slots)
    except infra.InfraError as exc:
        raise _fail(str(exc)) from exc
    _print_status(state, json_output)


@infra_app.command("down")
def infra_down() -> None:
    """Stop everything `infra up` started (data stays under .infra/)."""
    from streamflow_jobs import infra  # noqa: PLC0415

    infra.down()
    console.print("stopped")


@infra_app.command("status")
def infra_status(
    json_output: Annotated[bool, typer.Option("--json", help="Print the state as JSON")] = False,
) -> None:
    """What runs and where. `--json`: {"kafka": {"bootstrap"}, "postgres": {"dsn"}, "flink"}."""
    from streamflow_jobs import infra  # noqa: PLC0415

    _print_status(infra.status(), json_output)


def live(
    input: Annotated[Path, typer.Option("--input", "-i", help="Events, one JSON per line")],
    alerts: Annotated[Path, typer.Option(help="Alerts read with read_committed (JSON lines)")],
    dlq: Annotated[Path | None, typer.Option(help="Dead letters (JSON lines)")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the summary as JSON here")] = None,
    rules: Annotated[Path | None, typer.Option(help="Rules YAML (RulesConfig)")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model artifact; default: the shipped one")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(min=1, help="Produce at this many events/s (default: as fast as possible)"),
    ] = None,
    shadow_rules: ShadowRules = None,
    shadow_model: ShadowModel = None,
    shadow_output: Annotated[
        Path | None,
        typer.Option(help="The challenger's verdicts where either side alerted (JSON lines)"),
    ] = None,
) -> None:
    """Run the file through the real pipeline: Kafka -> the three Flink jobs -> alerts.

    Starts the local infrastructure if needed, creates fresh topics for this run, submits the
    three jobs, produces the file's lines in order, waits until every line is accounted for
    (bronze rows + dead letters), then writes the committed alerts and stops the jobs.
    """
    from streamflow_jobs import live as live_run  # noqa: PLC0415

    try:
        result = live_run.run(
            input_path=input, alerts_path=alerts, dlq_path=dlq, summary_path=summary,
            rules_path=rules, model_path=model, rate=rate, console=console,
            shadow_rules=shadow_rules, shadow_model=shadow_model, shadow_path=shadow_output,
        )  # fmt: skip
    except live_run.LiveError as exc:
        raise _fail(str(exc)) from exc
    live_run.print_summary(result, Console())


def live_report(
    summary: Annotated[Path, typer.Option(help="Summary JSON from `streamflow live`")],
    alerts: Annotated[Path, typer.Option(help="Alerts from `streamflow live`")],
    labels: Annotated[Path, typer.Option(help="Labels from `streamflow generate`")],
    output_dir: Annotated[Path, typer.Option(help="Where live-report.txt/.png go")] = Path(
        "report"
    ),
) -> None:
    """The live run's report: throughput, latency, alerts by rule, precision/recall, a PNG."""
    from streamflow_jobs.live_report import build_live_report  # noqa: PLC0415

    for path in (summary, alerts, labels):
        if not path.is_file():
            raise _fail(f"file not found: {path}")
    Console().print(build_live_report(summary, alerts, labels, output_dir))


def register(app: typer.Typer) -> None:
    app.add_typer(infra_app, name="infra")
    app.command("live")(live)
    app.command("live-report")(live_report)
