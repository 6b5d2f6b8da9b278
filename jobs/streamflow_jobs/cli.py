"""``streamflow``: generate data, train the model, replay (backtest), report, export contracts."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

app = typer.Typer(
    help="StreamFlow: real-time fraud detection. Data tools for the detector core.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

TRAIN_EVENTS = 200_000
DEFAULT_SEED = 7


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


def _load_rules(path: Path | None) -> Any:
    from pydantic import ValidationError  # noqa: PLC0415

    from streamflow_jobs.rules.config import RulesConfig  # noqa: PLC0415

    if path is None:
        return RulesConfig()
    try:
        return RulesConfig.from_yaml(path)
    except FileNotFoundError as exc:
        raise _fail(f"rules file not found: {path}") from exc
    except (ValidationError, ValueError) as exc:
        raise _fail(f"invalid rules file {path}: {exc}") from exc


def _load_model(path: Path | None, no_model: bool) -> Any:
    from streamflow_jobs.model.forest import ForestScorer, ModelArtifactError  # noqa: PLC0415

    if no_model:
        return None
    try:
        return ForestScorer.load(path)
    except ModelArtifactError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def generate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Events, one JSON per line")],
    labels: Annotated[Path, typer.Option(help="Labels file (transaction_id, is_fraud, pattern)")],
    events: Annotated[int, typer.Option(min=1, help="Number of events")] = 100_000,
    fraud_rate: Annotated[
        float, typer.Option(min=0.0, max=0.49, help="Share of fraud events")
    ] = 0.02,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files")] = 42,
    customers: Annotated[int, typer.Option(min=1)] = 1000,
    rules_output: Annotated[
        Path | None, typer.Option(help="Also write a rules YAML holding this world's blacklist")
    ] = None,
) -> None:
    """Generate synthetic transactions with labelled fraud patterns and hard negatives."""
    from streamflow_jobs.generator import Generator, GeneratorConfig  # noqa: PLC0415
    from streamflow_jobs.rules.config import BlacklistRule, RulesConfig  # noqa: PLC0415

    gen = Generator(
        GeneratorConfig(events=events, fraud_rate=fraud_rate, seed=seed, customers=customers)
    )
    fraud = 0
    with output.open("wb") as out, labels.open("wb") as lab, _progress() as bar:
        task = bar.add_task("generating", total=events)
        for i, (event, label) in enumerate(gen.generate(), start=1):
            out.write(orjson.dumps(event) + b"\n")
            lab.write(orjson.dumps(label) + b"\n")
            fraud += label["is_fraud"]
            if i % 10_000 == 0:
                bar.update(task, completed=i)
    if rules_output is not None:
        rules = RulesConfig(blacklist=BlacklistRule(customers=gen.blacklist))
        rules_output.write_text(rules.to_yaml(), encoding="utf-8")
    console.print(
        f"wrote {events} events ({fraud} fraud, {len(gen.customers)} customers, "
        f"{gen.days:.0f} days) to {output}; labels to {labels}"
    )


@app.command()
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact (JSON)")] = Path(
        "model.json"
    ),
    seed: Annotated[
        int, typer.Option(help="Seed of the forest (and of generated data)")
    ] = DEFAULT_SEED,
    input: Annotated[
        Path | None, typer.Option(help="Events to train on; default: generate them from --seed")
    ] = None,
    events: Annotated[
        int, typer.Option(min=2, help="Events to generate without --input")
    ] = TRAIN_EVENTS,
    rules: Annotated[Path | None, typer.Option(help="Rules YAML used to build features")] = None,
) -> None:
    """Train FR-006's IsolationForest and export it as a checksummed data artifact."""
    import numpy as np  # noqa: PLC0415

    from streamflow_jobs.events import ParsedTransaction, parse_transaction  # noqa: PLC0415
    from streamflow_jobs.generator import Generator, GeneratorConfig  # noqa: PLC0415
    from streamflow_jobs.model.train import train_forest  # noqa: PLC0415
    from streamflow_jobs.rules.config import BlacklistRule  # noqa: PLC0415
    from streamflow_jobs.rules.evaluator import RulesEvaluator  # noqa: PLC0415
    from streamflow_jobs.state import CustomerState  # noqa: PLC0415

    config = _load_rules(rules)
    if input is None:
        gen = Generator(GeneratorConfig(events=events, seed=seed))
        raw_events: Any = (orjson.dumps(e) for e, _ in gen.generate())
        config = config.model_copy(update={"blacklist": BlacklistRule(customers=gen.blacklist)})
        source: dict[str, Any] = {"generator_events": events, "generator_seed": seed}
    else:
        if not input.is_file():
            raise _fail(f"input file not found: {input}")
        raw_events = input.open("rb")
        source = {"input": input.name}
    evaluator = RulesEvaluator(config)
    states: dict[str, CustomerState] = {}
    rows = []
    skipped = 0
    with _progress() as bar:
        task = bar.add_task("building features", total=events if input is None else None)
        for i, raw in enumerate(raw_events, start=1):
            parsed = parse_transaction(raw.rstrip(b"\n"))
            if not isinstance(parsed, ParsedTransaction):
                skipped += 1
                continue
            txn = parsed.transaction
            state = states.setdefault(txn.customer_id, CustomerState())
            rows.append(evaluator.evaluate(state, txn).features)
            if i % 10_000 == 0:
                bar.update(task, completed=i)
    if len(rows) < 2:
        raise _fail("fewer than two valid transactions to train on")
    console.print(f"training on {len(rows)} transactions ({skipped} invalid lines skipped)")
    doc = train_forest(np.array(rows, dtype=np.float64), seed=seed, training=source)
    from streamflow_jobs.model.forest import write_artifact  # noqa: PLC0415

    write_artifact(doc, output)
    console.print(
        f"wrote model {doc['model_version']} ({output.stat().st_size} bytes, "
        f"{doc['checksum']}) to {output}"
    )


@app.command()
def replay(
    input: Annotated[Path, typer.Option("--input", "-i", help="Events, one JSON per line")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Decisions, one JSON per line")],
    dlq: Annotated[
        Path | None, typer.Option(help="Dead letters; default: <output>.dead.jsonl")
    ] = None,
    rules: Annotated[Path | None, typer.Option(help="Rules YAML (RulesConfig)")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model artifact; default: the shipped one")
    ] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Rules only (no FR-006)")] = False,
    labels: Annotated[Path | None, typer.Option(help="Labels: adds quality metrics")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the summary as JSON here")] = None,
) -> None:
    """Backtest: replay events through the detector, in file order, exactly as the stream job."""
    from streamflow_jobs.detector import Detector  # noqa: PLC0415
    from streamflow_jobs.replay import load_labels  # noqa: PLC0415
    from streamflow_jobs.replay import replay as run_replay  # noqa: PLC0415

    if not input.is_file():
        raise _fail(f"input file not found: {input}")
    if labels is not None and not labels.is_file():
        raise _fail(f"labels file not found: {labels}")
    detector = Detector(_load_rules(rules), _load_model(model, no_model))
    truth = None
    if labels is not None:
        try:
            truth = load_labels(labels)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    dlq = dlq or output.with_name(output.name.removesuffix(".jsonl") + ".dead.jsonl")
    with ExitStack() as stack, _progress() as bar:
        out = stack.enter_context(output.open("wb"))
        dead = stack.enter_context(dlq.open("wb"))
        task = bar.add_task("replaying", total=input.stat().st_size)
        result = run_replay(
            input,
            out,
            dead,
            detector,
            labels=truth,
            progress=lambda done: bar.update(task, completed=done),
        )
    _print_summary(result.to_dict(), output, dlq, detector)
    if summary is not None:
        summary.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))


def _print_summary(s: dict[str, Any], output: Path, dlq: Path, detector: Any) -> None:
    out = Console()
    out.print(
        f"[bold]replayed[/] {s['lines']} lines in {s['seconds']} s "
        f"({s['events_per_second'] or 0:,} events/s); rules {detector.rules.version}, "
        f"model {detector.model_version or 'none'}"
    )
    out.print(f"  decisions  {s['decisions']:>10}  -> {output}  ({s['alerts']} alerts)")
    out.print(f"  dead letters {s['dead_letters']:>8}  -> {dlq}  {s['errors'] or ''}")
    if s["blank_lines"]:
        out.print(f"  blank lines {s['blank_lines']:>9}  (not events)")
    if s["upgraded_v1"] or s["newer_versions"]:
        out.print(
            f"  schema: {s['upgraded_v1']} v1 upgraded, {s['newer_versions']} newer "
            "than v2 read forward-compatibly"
        )
    if s["unknown_fields"]:
        out.print(f"  [yellow]warning:[/] unknown fields ignored: {s['unknown_fields']}")
    m = s.get("metrics")
    if m:
        table = Table(title="detection quality", show_header=False)
        for key in (
            "labelled",
            "fraud",
            "precision",
            "recall",
            "average_precision",
            "roc_auc",
            "recall_at_1pct_alert_rate",
        ):
            value = m.get(key)
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        out.print(table)
        patterns = Table("pattern", "events", "recall / alert rate")
        for name, row in m.get("per_pattern", {}).items():
            patterns.add_row(
                name,
                str(row["events"]),
                f"{row.get('recall', row.get('alert_rate')):.3f}"
                + ("" if "recall" in row else " (alert rate)"),
            )
        out.print(patterns)


@app.command()
def report(
    decisions: Annotated[Path, typer.Option(help="Decisions from `streamflow replay`")],
    labels: Annotated[Path, typer.Option(help="Labels from `streamflow generate`")],
    output_dir: Annotated[Path, typer.Option(help="Where report.txt and report.png go")] = Path(
        "report"
    ),
) -> None:
    """A text summary and a chart (score distribution by label, precision-recall curves)."""
    from streamflow_jobs.report import build_report  # noqa: PLC0415

    for path in (decisions, labels):
        if not path.is_file():
            raise _fail(f"file not found: {path}")
    output_dir.mkdir(parents=True, exist_ok=True)
    text = build_report(decisions, labels, output_dir)
    Console().print(text)
    console.print(f"wrote {output_dir / 'report.txt'} and {output_dir / 'report.png'}")


@app.command()
def schemas(
    output_dir: Annotated[Path, typer.Option(help="Directory for the JSON Schema files")] = Path(
        "jobs/schemas"
    ),
) -> None:
    """Export the JSON Schema of every event contract."""
    from streamflow_jobs.contracts import write_schemas  # noqa: PLC0415

    for path in write_schemas(output_dir):
        console.print(f"wrote {path}")


@app.command()
def render(
    pipeline: Annotated[Path, typer.Argument(help="A FraudPipeline YAML (e.g. config/samples/)")],
) -> None:
    """Print the children the operator would apply for a FraudPipeline (a dry run)."""
    from streamflow_operator.reconcile import render_offline  # noqa: PLC0415

    if not pipeline.is_file():
        raise _fail(f"file not found: {pipeline}")
    try:
        text = render_offline(pipeline.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    sys.stdout.write(text)


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option(help="Write here; default: crds/ and the Helm chart's crds/")
    ] = None,
) -> None:
    """Generate the FraudPipeline CRD from the operator's spec models."""
    from streamflow_operator.crd import CHART_CRD_PATH, CRD_PATH, write_crd  # noqa: PLC0415

    for path in [output] if output else [CRD_PATH, CHART_CRD_PATH]:
        console.print(f"wrote {write_crd(path)}")


from streamflow_jobs.warehouse.cli import register as _register_warehouse  # noqa: E402

_register_warehouse(app)


def main() -> None:
    """The console script. A path that cannot be read or written (a missing directory, a full
    disk, no permission) ends as one clear line and exit code 2, never a traceback."""
    try:
        app()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[bold red]error:[/] {where}{exc.strerror or exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
