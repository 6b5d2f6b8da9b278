"""The model_training pipeline's steps: history out of the warehouse, ``streamflow train``, a
backtest of the candidate against the live model on recent history, and registration of a
candidate that is not worse. Promotion stays a human change of the FraudPipeline's ``model``
section (docs/runbook.md).

The candidate is what the shipped default is: gradient-boosted trees trained with labels
(``streamflow train --labels``). The labels are the confirmed verdicts (silver.feedback) and, for
every other exported transaction, "not reported as fraud" (legitimate): the usual label maturity
of card fraud, where what nobody disputed counts as legitimate. Without it, only reviewed alerts
and chargebacks would carry labels, and a model trained on them alone would learn what analysts
look at rather than what fraud looks like. The backtest is one ``streamflow backtest`` pass over
the holdout (the candidate as the live model's shadow), the same labels for both sides.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

CLI = [sys.executable, "-m", "streamflow_jobs.cli"]
# Metrics compared, each higher-is-better; a candidate must not lose more than the tolerance.
COMPARED = ("average_precision", "recall_at_1pct_alert_rate")


class TrainingError(RuntimeError):
    """A step that cannot go on (one line)."""


@dataclass(frozen=True)
class Export:
    train_events: Path
    holdout_events: Path
    labels: Path
    train_rows: int
    holdout_rows: int
    labelled: int  # confirmed verdicts among the exported transactions
    window: tuple[str, str, str]  # first event, holdout start, last event (ISO, UTC)
    fraud: int = 0  # of which fraudulent


def _event(row: tuple[Any, ...]) -> bytes:
    tid, cust, store, product, amount, currency, method, lat, lon, stamp, version = row
    event: dict[str, Any] = {
        "transaction_id": tid,
        "customer_id": cust,
        "store_id": store,
        "product_id": product,
        "amount": str(amount),
        "currency": currency,
        "latitude": lat,
        "longitude": lon,
        "timestamp": stamp,  # the original text: the event's own UTC offset matters to FR-004
        "schema_version": version,
    }
    if method is not None:
        event["payment_method"] = method
    return orjson.dumps(event) + b"\n"


def export_history(
    dsn: str, directory: Path, days: float = 30.0, holdout_days: float = 7.0
) -> Export:
    """The last ``days`` of silver's transactions (counted back from the newest event, not
    the wall clock) as event files, in event-time order: the older part to train on, the last
    ``holdout_days`` to backtest on; and a label for each: its standing verdict
    (silver.feedback), else legitimate (nobody reported it)."""
    if not 0 < holdout_days < days:
        raise TrainingError("holdout_days must be positive and shorter than days")
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / n for n in ("train.jsonl", "holdout.jsonl", "labels.jsonl")]
    counts = [0, 0]
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        newest = conn.execute("SELECT max(event_time) FROM silver.transactions").fetchone()
        if newest is None or newest[0] is None:
            raise TrainingError("silver.transactions is empty: nothing to train on")
        last: datetime = newest[0]
        first, split = last - timedelta(days=days), last - timedelta(days=holdout_days)
        with paths[0].open("wb") as train, paths[1].open("wb") as hold:
            cur = conn.cursor(name="history")  # server-side: history can be large
            cur.itersize = 10_000
            cur.execute(
                "SELECT transaction_id, customer_id, store_id, product_id, amount, currency,"
                " payment_method, latitude, longitude, event_timestamp, schema_version,"
                " event_time >= %s FROM silver.transactions WHERE event_time > %s"
                " ORDER BY event_time, transaction_id",
                (split, first),
            )
            for row in cur:
                held = bool(row[-1])
                (hold if held else train).write(_event(row[:-1]))
                counts[held] += 1
        verdicts = [0, 0]  # confirmed verdicts, of which fraudulent
        with paths[2].open("wb") as labels:
            cur = conn.cursor(name="labels")
            cur.itersize = 10_000
            cur.execute(
                "SELECT t.transaction_id, f.is_fraud FROM silver.transactions t"
                " LEFT JOIN silver.feedback f USING (transaction_id)"
                " WHERE t.event_time > %s ORDER BY 1",
                (first,),
            )
            for tid, verdict in cur:
                if verdict is not None:
                    verdicts[0] += 1
                    verdicts[1] += bool(verdict)
                fraud = bool(verdict)  # no verdict: nobody reported it, legitimate
                labels.write(orjson.dumps({"transaction_id": tid, "is_fraud": fraud}) + b"\n")
    return Export(
        paths[0],
        paths[1],
        paths[2],
        counts[0],
        counts[1],
        verdicts[0],
        (first.isoformat(), split.isoformat(), last.isoformat()),
        verdicts[1],
    )


def _run(*args: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise TrainingError(f"streamflow {args[0]} failed: {lines[-1]}")


def train_candidate(
    events: Path, labels: Path, output: Path, seed: int = 7, rules: Path | None = None
) -> dict[str, Any]:
    """``streamflow train --input events --labels labels`` (gradient-boosted trees, the shipped
    default's kind) -> the artifact at ``output`` (its document)."""
    _run(
        "train",
        "--input",
        str(events),
        "--labels",
        str(labels),
        "--output",
        str(output),
        "--seed",
        str(seed),
        *(["--rules", str(rules)] if rules else []),
    )
    doc: dict[str, Any] = orjson.loads(output.read_bytes())
    return doc


def backtest(
    events: Path,
    labels: Path,
    baseline_model: Path | None,
    candidate_model: Path,
    workdir: Path,
    rules: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Both models over the same recent history, in one ``streamflow backtest`` pass (the
    candidate as the live model's shadow): ``{"baseline": m, "candidate": m}`` with each side's
    alerts and quality metrics (average precision, recall at a 1 % alert rate, ...)."""
    summary = workdir / "backtest.summary.json"
    _run(
        "backtest",
        "--input",
        str(events),
        "--labels",
        str(labels),
        "--candidate-model",
        str(candidate_model),
        "--output",
        str(workdir / "backtest.changes.jsonl"),
        "--summary",
        str(summary),
        *(["--model", str(baseline_model)] if baseline_model else []),
        *(["--rules", str(rules)] if rules else []),
    )
    doc = orjson.loads(summary.read_bytes())
    # Each side's configuration is the rules file's; the registry keeps the measurements.
    return {
        side: {k: v for k, v in doc[side].items() if k != "config"}
        for side in ("baseline", "candidate")
    }


def not_worse(result: dict[str, dict[str, Any]], tolerance: float = 0.005) -> tuple[bool, str]:
    """Whether the candidate is at least as good as the baseline on every compared metric
    (within ``tolerance``), and why, in one line. Without labelled fraud there is no verdict."""
    base, cand = result.get("baseline") or {}, result.get("candidate") or {}
    if not base.get("fraud") or base.get("average_precision") is None:
        return False, "no labelled fraud in the backtest window: nothing to compare on"
    worse, parts = [], []
    for metric in COMPARED:
        b, c = base.get(metric), cand.get(metric)
        if b is None or c is None:
            return False, f"{metric} missing from the backtest"
        parts.append(f"{metric} {b:.4f} -> {c:.4f}")
        if c < b - tolerance:
            worse.append(metric)
    verdict = "worse on " + ", ".join(worse) if worse else "not worse"
    return not worse, f"{verdict} ({'; '.join(parts)}; {base['fraud']} labelled fraud)"


def register(
    dsn: str,
    artifact: Path,
    result: dict[str, dict[str, Any]],
    baseline_version: str | None,
    training: dict[str, Any],
) -> str:
    """Record the candidate (artifact, metrics, checksum) in ml.model_candidates; returns its
    version. Registering the same artifact again changes nothing."""
    from streamflow_jobs.model.forest import ModelArtifactError  # noqa: PLC0415
    from streamflow_jobs.model.loader import load_model  # noqa: PLC0415

    try:
        load_model(artifact)  # checksum and structure verified before it is recorded
    except ModelArtifactError as exc:
        raise TrainingError(str(exc)) from exc
    doc = orjson.loads(artifact.read_bytes())
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute(
            "INSERT INTO ml.model_candidates (model_version, checksum, artifact, metrics,"
            " baseline_version, baseline_metrics, training) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (model_version) DO NOTHING",
            (
                doc["model_version"],
                doc["checksum"],
                orjson.dumps(doc).decode(),
                orjson.dumps(result["candidate"]).decode(),
                baseline_version,
                orjson.dumps(result["baseline"]).decode(),
                orjson.dumps(training).decode(),
            ),
        )
    return str(doc["model_version"])
