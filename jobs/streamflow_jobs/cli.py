"""``streamflow``: generate data, train the model, replay (backtest), report, export contracts.

Every command refuses an output that is one of its inputs (or another output) before it writes
anything, and writes its outputs to temporary files renamed into place when it succeeds
(streamflow_jobs.files): a failed or interrupted run never destroys a file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from streamflow_jobs.cli_options import ShadowModel, ShadowRules

app = typer.Typer(
    help="StreamFlow: real-time fraud detection. Data tools for the detector core.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (``| head``): not an error (rich would exit 1)."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)


console = _Console(stderr=True)

TRAIN_EVENTS = 200_000
DEFAULT_SEED = 7


def _fail(message: str) -> typer.Exit:
    # soft_wrap: a long message stays one line when piped (never wrapped mid-word).
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


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
    from streamflow_jobs.rules.config import RulesConfig  # noqa: PLC0415

    if path is None:
        return RulesConfig()
    try:
        return RulesConfig.from_yaml(path)
    except FileNotFoundError as exc:
        raise _fail(f"rules file not found: {path}") from exc
    except ValueError as exc:
        raise _fail(f"invalid rules file {path}: " + "; ".join(str(exc).splitlines())) from exc


def _load_model(path: Path | None, no_model: bool) -> Any:
    from streamflow_jobs.model.forest import ModelArtifactError  # noqa: PLC0415
    from streamflow_jobs.model.loader import load_model  # noqa: PLC0415

    if no_model:
        return None
    try:
        return load_model(path)
    except ModelArtifactError as exc:
        raise _fail(str(exc)) from exc


def _load_labels(path: Path | None) -> Any:
    from streamflow_jobs.labels import LabelError, load_labels  # noqa: PLC0415

    if path is None:
        return None
    try:
        labels = load_labels(path)
    except LabelError as exc:
        raise _fail(str(exc)) from exc
    if labels.repeated:
        _warn(f"{labels.repeated} transactions are labelled more than once (consistently)")
    return labels


def _check_paths(inputs: dict[str, Path | None], outputs: dict[str, Path | None]) -> None:
    """Inputs exist; no output is an input or another output (checked before any writing)."""
    from streamflow_jobs.files import STDIO, FileError, refuse_collisions  # noqa: PLC0415

    for option, path in inputs.items():
        if path is not None and path != STDIO and not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "file not found"
            raise _fail(f"{option} {path}: {what}")
    try:
        refuse_collisions(inputs, outputs)
    except FileError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def generate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Events, one JSON per line")],
    labels: Annotated[Path, typer.Option(help="Labels file (transaction_id, is_fraud, pattern)")],
    events: Annotated[int, typer.Option(help="Number of events")] = 100_000,
    fraud_rate: Annotated[float, typer.Option(help="Share of fraud events, in [0, 0.5)")] = 0.02,
    seed: Annotated[int, typer.Option(help="Random seed; same options, same files")] = 42,
    customers: Annotated[int, typer.Option(help="Number of customers")] = 1000,
    days: Annotated[
        float | None,
        typer.Option(help="Time span in days, 1-3660 [default: ~3 transactions/customer/day]"),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Relative weights of the fraud patterns, e.g. velocity_burst=2,impossible_travel=1"
            " (unlisted patterns get none) [default: every pattern, about equally]"
        ),
    ] = None,
    region: Annotated[str, typer.Option(help="Where the stores are: brazil, usa or europe")] = (
        "brazil"
    ),
    stores: Annotated[
        int | None, typer.Option(help="Number of stores, 2-1000 [default: one per city (10)]")
    ] = None,
    spend_median: Annotated[float, typer.Option(help="The median customer's usual amount")] = 120.0,
    activity_spread: Annotated[
        float, typer.Option(help="Spread (log-normal sigma) of the customers' rates of buying")
    ] = 0.5,
    night_owl_share: Annotated[
        float, typer.Option(help="Share of customers whose usual hours are around midnight")
    ] = 0.10,
    hard_negatives: Annotated[
        str | None,
        typer.Option(
            help="Rates of legitimate look-alikes, e.g. legit_travel=0.2 (share of customers "
            "taking a trip), legit_big_purchase=0.01 (per event) [default: 0.05, 0.006]"
        ),
    ] = None,
    rules_output: Annotated[
        Path | None, typer.Option(help="Also write a rules YAML holding this world's blacklist")
    ] = None,
) -> None:
    """Generate a world: synthetic transactions with labelled fraud patterns and hard negatives."""
    from streamflow_jobs import generator as g  # noqa: PLC0415
    from streamflow_jobs.files import Outputs  # noqa: PLC0415
    from streamflow_jobs.rules.config import BlacklistRule, RulesConfig  # noqa: PLC0415

    _check_paths({}, {"--output": output, "--labels": labels, "--rules-output": rules_output})
    negatives = tuple(h.name for h in g.HARD_NEGATIVES)
    try:
        gen = g.Generator(
            g.GeneratorConfig(
                events=events,
                fraud_rate=fraud_rate,
                seed=seed,
                customers=customers,
                days=days,
                mix=None if mix is None else g.parse_weights(mix, g.FRAUD_PATTERNS, "--mix"),
                region=region,
                stores=stores,
                spend_median=spend_median,
                activity_spread=activity_spread,
                night_owl_share=night_owl_share,
                hard_negatives=None
                if hard_negatives is None
                else g.parse_weights(hard_negatives, negatives, "--hard-negatives"),
            )
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    fraud = 0
    with Outputs(output, labels, rules_output) as files, _progress() as bar:
        out, lab = files[output], files[labels]
        task = bar.add_task("generating", total=events)
        for i, (event, label) in enumerate(gen.generate(), start=1):
            out.write(orjson.dumps(event) + b"\n")
            lab.write(orjson.dumps(label) + b"\n")
            fraud += label["is_fraud"]
            if i % 10_000 == 0:
                bar.update(task, completed=i)
        if rules_output is not None:
            rules = RulesConfig(blacklist=BlacklistRule(customers=gen.blacklist))
            files[rules_output].write(rules.to_yaml().encode("utf-8"))
    console.print(
        f"wrote {events} events ({fraud} fraud, {len(gen.customers)} customers, "
        f"{len(gen.stores)} stores in {region}, {gen.days:g} days, "
        f"{len(gen.blacklist)} blacklisted) to {output}; labels to {labels}"
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
        Path | None,
        typer.Option(help="Events to train on (- for standard input); default: generate them"),
    ] = None,
    events: Annotated[
        int, typer.Option(min=1, help="Events to generate without --input")
    ] = TRAIN_EVENTS,
    rules: Annotated[Path | None, typer.Option(help="Rules YAML used to build features")] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labels of --input (transaction_id, is_fraud): train boosted trees"),
    ] = None,
    unsupervised: Annotated[
        bool,
        typer.Option(
            "--unsupervised", help="Without --input: the IsolationForest, not the boosted trees"
        ),
    ] = False,
) -> None:
    """Train FR-006's model and export it as a checksummed data artifact: an IsolationForest,
    or with --labels gradient-boosted trees on the features and the rules' severities.

    Without --input, the generated reference world (labelled) is used: `train --seed 7` is how
    the shipped model (boosted trees) is made, byte for byte; with --unsupervised, the forest."""
    import numpy as np  # noqa: PLC0415

    from streamflow_jobs.events import ParsedTransaction, parse_transaction  # noqa: PLC0415
    from streamflow_jobs.files import Outputs, open_input  # noqa: PLC0415
    from streamflow_jobs.generator import Generator, GeneratorConfig  # noqa: PLC0415
    from streamflow_jobs.labels import labels_of  # noqa: PLC0415
    from streamflow_jobs.model.forest import write_artifact  # noqa: PLC0415
    from streamflow_jobs.model.train import MIN_TRAINING_ROWS, train_forest  # noqa: PLC0415
    from streamflow_jobs.replay import read_lines  # noqa: PLC0415
    from streamflow_jobs.rules.config import BlacklistRule  # noqa: PLC0415
    from streamflow_jobs.rules.evaluator import RulesEvaluator  # noqa: PLC0415
    from streamflow_jobs.state import CustomerState  # noqa: PLC0415

    _check_paths({"--input": input, "--rules": rules, "--labels": labels}, {"--output": output})
    if labels is not None and input is None:
        raise _fail("--labels needs --input: the events the labels are about")
    if unsupervised and input is not None:
        raise _fail("--unsupervised is for the generated world: with --input, omit --labels")
    truth = _load_labels(labels)
    config = _load_rules(rules)
    # The output exists (as a temporary file) before the work: an unwritable path fails first.
    with Outputs(output) as files, contextlib.ExitStack() as stack:
        if input is None:
            gen = Generator(GeneratorConfig(events=events, seed=seed))
            world = list(gen.generate())
            raw_events: Any = (orjson.dumps(e) for e, _ in world)
            if not unsupervised:  # the reference world is labelled: the shipped model learns
                truth = labels_of([label for _, label in world])
            config = config.model_copy(update={"blacklist": BlacklistRule(customers=gen.blacklist)})
            source: dict[str, Any] = {"generator_events": events, "generator_seed": seed}
        else:
            stream = stack.enter_context(open_input(input))
            raw_events = (line for block in read_lines(stream) for line in block)
            source = {"input": input.name}
        evaluator = RulesEvaluator(config)
        states: dict[str, CustomerState] = {}
        rows = []
        skipped = 0
        labelled: list[tuple[str, tuple[float, ...]]] = []  # with --labels: id, severities
        with _progress() as bar:
            task = bar.add_task("building features", total=events if input is None else None)
            for i, raw in enumerate(raw_events, start=1):
                if not raw.strip():
                    continue
                parsed = parse_transaction(raw)
                if not isinstance(parsed, ParsedTransaction):
                    skipped += 1
                    continue
                txn = parsed.transaction
                state = states.setdefault(txn.customer_id, CustomerState())
                outcome = evaluator.evaluate(state, txn)
                if outcome.repeat_of is not None:
                    skipped += 1  # a transaction seen again adds nothing
                    continue
                rows.append(outcome.features)
                if truth is not None:
                    labelled.append((txn.transaction_id, outcome.severities))
                if i % 10_000 == 0:
                    bar.update(task, completed=i)
        if truth is not None:
            from streamflow_jobs.model.train import train_from_labels  # noqa: PLC0415

            try:
                doc, note = train_from_labels(rows, labelled, truth, seed=seed, training=source)
            except ValueError as exc:
                raise _fail(str(exc)) from exc
            console.print(f"{note} ({skipped} lines skipped)")
            write_artifact(doc, files[output])
        elif len(rows) < MIN_TRAINING_ROWS:
            raise _fail(
                f"{len(rows)} valid transactions to train on ({skipped} lines skipped); "
                f"a model needs at least {MIN_TRAINING_ROWS}"
            )
        else:
            console.print(f"training on {len(rows)} transactions ({skipped} lines skipped)")
            doc = train_forest(np.array(rows, dtype=np.float64), seed=seed, training=source)
            write_artifact(doc, files[output])
    console.print(
        f"wrote model {doc['model_version']} ({output.stat().st_size} bytes, "
        f"{doc['checksum']}) to {output}"
    )


@app.command()
def replay(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Events, one JSON per line (- for stdin; gzip ok)")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Decisions, one JSON per line (- for stdout)")
    ],
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
    shadow_rules: ShadowRules = None,
    shadow_model: ShadowModel = None,
) -> None:
    """Replay events through the detector, in file order, exactly as the stream job.

    With --shadow-rules and/or --shadow-model a challenger runs beside it on the same events
    (its own state): each decision then carries the challenger's verdict as `shadow`.

    `-i -` reads standard input (gzip input is read as it is); `-o -` writes the decisions to
    standard output, and the summary then goes to standard error."""
    from streamflow_jobs.detector import Detector  # noqa: PLC0415
    from streamflow_jobs.files import STDIO, Outputs, open_input  # noqa: PLC0415
    from streamflow_jobs.replay import replay as run_replay  # noqa: PLC0415

    if dlq is None:
        base = Path("decisions.jsonl") if output == STDIO else output
        dlq = base.with_name(base.name.removesuffix(".jsonl") + ".dead.jsonl")
    _check_paths(
        {"--input": input, "--labels": labels, "--rules": rules, "--model": model,
         "--shadow-rules": shadow_rules, "--shadow-model": shadow_model},
        {"--output": output, "--dlq": dlq, "--summary": summary},
    )  # fmt: skip
    base_rules, base_model = _load_rules(rules), _load_model(model, no_model)
    challenger = None
    if shadow_rules is not None or shadow_model is not None:
        challenger = Detector(
            _load_rules(shadow_rules) if shadow_rules is not None else base_rules,
            _load_model(shadow_model, False) if shadow_model is not None else base_model,
        )
    detector = Detector(base_rules, base_model, shadow=challenger)
    truth = _load_labels(labels)
    with Outputs(output, dlq, summary) as files, open_input(input) as stream, _progress() as bar:
        # Progress in bytes of the file on disk (for gzip, the compressed bytes read so far).
        on_disk: Any = getattr(stream, "fileobj", None) or stream
        size = input.stat().st_size if input != STDIO else None
        task = bar.add_task("replaying", total=size)
        result = run_replay(
            stream,
            files[output],
            files[dlq],
            detector,
            source_name=str(input),
            labels=truth,
            progress=(lambda: bar.update(task, completed=on_disk.tell())) if size else None,
        )
        report = result.to_dict()
        if summary is not None:
            files[summary].write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    _print_summary(report, output, dlq, _Console(stderr=output == STDIO))


@app.command()
def backtest(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Events, one JSON per line (- for stdin; gzip ok)")
    ],
    candidate_rules: Annotated[
        Path | None, typer.Option(help="The candidate's rules (default: the baseline's)")
    ] = None,
    candidate_model: Annotated[
        Path | None, typer.Option(help="The candidate's model (default: the baseline's)")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Changed decisions, one JSON per line")
    ] = Path("changes.jsonl"),
    rules: Annotated[
        Path | None, typer.Option(help="The baseline's rules (default: built-in)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="The baseline's model (default: the shipped one)")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels: precision, recall, AP")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the summary as JSON here")] = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="Write backtest.png (both sides compared) here")
    ] = None,
    dlq: Annotated[
        Path | None, typer.Option(help="Dead letters; default: <output>.dead.jsonl")
    ] = None,
) -> None:
    """Try a candidate (rules and/or model) on history beside the baseline, in one pass: the
    transactions whose action or alert changed, and both sides' alert counts (and quality with
    --labels)."""
    from rich.table import Table  # noqa: PLC0415

    from streamflow_jobs.backtest import backtest as run_backtest  # noqa: PLC0415
    from streamflow_jobs.backtest import table_rows, write_png  # noqa: PLC0415
    from streamflow_jobs.detector import Detector  # noqa: PLC0415
    from streamflow_jobs.files import STDIO, Outputs, open_input  # noqa: PLC0415

    if candidate_rules is None and candidate_model is None:
        raise _fail("nothing to try: give --candidate-rules and/or --candidate-model")
    if output == STDIO:
        raise _fail("--output must be a file (the summary table goes to the terminal)")
    if dlq is None:
        dlq = output.with_name(output.name.removesuffix(".jsonl") + ".dead.jsonl")
    png = report_dir / "backtest.png" if report_dir is not None else None
    _check_paths(
        {"--input": input, "--labels": labels, "--rules": rules, "--model": model,
         "--candidate-rules": candidate_rules, "--candidate-model": candidate_model},
        {"--output": output, "--dlq": dlq, "--summary": summary, "--report-dir": png},
    )  # fmt: skip
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    base_rules, base_model = _load_rules(rules), _load_model(model, False)
    baseline = Detector(base_rules, base_model)
    candidate = Detector(
        _load_rules(candidate_rules) if candidate_rules is not None else base_rules,
        _load_model(candidate_model, False) if candidate_model is not None else base_model,
    )
    truth = _load_labels(labels)
    with Outputs(output, dlq, summary, png) as files, open_input(input) as stream:
        result = run_backtest(
            stream, files[output], files[dlq], baseline, candidate,
            source_name=str(input), labels=truth,
        )  # fmt: skip
        report = result.to_dict()
        if summary is not None:
            files[summary].write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        if png is not None:
            write_png(result, truth, files[png])
    table = Table(title=f"backtest of {input.name}: {report['decisions']} decisions")
    for column in ("", "baseline", "candidate"):
        table.add_column(column, justify="right" if column else "left")
    for row in table_rows(report):
        table.add_row(*row)
    out = _Console()
    out.print(table)
    out.print(
        f"{report['changed']} decisions changed -> {output}"
        + (f"; {report['dead_letters']} dead letters -> {dlq}" if report["dead_letters"] else "")
    )


def _print_summary(s: dict[str, Any], output: Path, dlq: Path, out: Console) -> None:
    out.print(
        f"[bold]replayed[/] {s['lines']} lines in {s['seconds']} s "
        f"({s['events_per_second'] or 0:,} events/s); rules {escape(s['rules_version'])}, "
        f"model {escape(s['model_version'] or 'none')}, alert at score >= "
        f"{s['alert_threshold']}",
        soft_wrap=True,
    )
    shown = "standard output" if str(output) == "-" else output
    out.print(f"  decisions  {s['decisions']:>10}  -> {shown}  ({s['alerts']} alerts)")
    out.print(f"  dead letters {s['dead_letters']:>8}  -> {dlq}  {s['errors'] or ''}")
    if s["duplicates"]:
        out.print(
            f"  duplicates {s['duplicates']:>10}  (transaction ids seen again: the first "
            "decision repeated, nothing scored twice)"
        )
    if s["implausible_timestamps"]:
        out.print(
            f"  [yellow]flagged[/] {s['implausible_timestamps']:>13}  implausible timestamps "
            "(reason TS-001)"
        )
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
    if m and m.get("coverage_warning"):
        out.print(f"  [yellow]warning:[/] {escape(m['coverage_warning'])}", soft_wrap=True)
    if m and m["labelled"]:
        table = Table(title="detection quality", show_header=False)
        for key in (
            "labelled",
            "coverage",
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
                escape(name),
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
    from streamflow_jobs.files import Outputs  # noqa: PLC0415
    from streamflow_jobs.report import ReportError, build_report  # noqa: PLC0415

    if output_dir.exists() and not output_dir.is_dir():
        raise _fail(f"--output-dir {output_dir} is a file, not a directory")
    text_path, png_path = output_dir / "report.txt", output_dir / "report.png"
    _check_paths(
        {"--decisions": decisions, "--labels": labels},
        {"report.txt": text_path, "report.png": png_path},
    )
    truth = _load_labels(labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with Outputs(text_path, png_path) as files:
            text, warnings = build_report(decisions, truth, files[text_path], files[png_path])
    except ReportError as exc:
        raise _fail(str(exc)) from exc
    for warning in warnings:
        _warn(warning)
    _Console().print(escape(text), soft_wrap=True)
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
    from streamflow_operator.reconcile import render_with_notes  # noqa: PLC0415

    if not pipeline.is_file():
        raise _fail(f"file not found: {pipeline}")
    try:
        text, notes = render_with_notes(pipeline.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    sys.stdout.write(text)
    sys.stderr.write("".join(f"# {note}\n" for note in notes))


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option(help="Write here; default: crds/ and the Helm chart's crds/")
    ] = None,
) -> None:
    """Generate the FraudPipeline CRD (and docs/reference/fraudpipeline.md) from the
    operator's spec models."""
    from streamflow_operator.crd import (  # noqa: PLC0415
        CHART_CRD_PATH,
        CRD_PATH,
        write_crd,
        write_reference,
    )

    for path in [output] if output else [CRD_PATH, CHART_CRD_PATH]:
        console.print(f"wrote {write_crd(path)}")
    if output is None:
        console.print(f"wrote {write_reference()}")


from streamflow_jobs.cli_streaming import register as _register_streaming  # noqa: E402

_register_streaming(app)
from streamflow_jobs.warehouse.cli import register as _register_warehouse  # noqa: E402

_register_warehouse(app)


def main() -> None:
    """The console script. A path that cannot be read or written (a missing directory, a full
    disk, no permission), or a corrupt compressed input, ends as one clear line and exit code
    2, never a traceback; a reader that closes standard output (``| head``) ends it quietly."""
    from streamflow_jobs.files import FileError  # noqa: PLC0415

    try:
        app()
    except FileError as exc:  # e.g. a compressed format found only when the input is opened
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (OSError, EOFError) as exc:
        filename = getattr(exc, "filename", None)
        where = f"{filename}: " if filename else ""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        console.print(f"[bold red]error:[/] {escape(where + str(detail))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
