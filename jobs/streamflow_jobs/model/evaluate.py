"""How well a model alone ranks and separates labelled fraud: its inputs built in stream order
exactly as the detector builds them, scored, and compared with the labels.

    uv run python -m streamflow_jobs.model.evaluate --model gbt.json --input tx.jsonl \\
        --labels labels.jsonl [--rules rules.yaml] [--threshold 0.5 --threshold 0.8]

prints one JSON object: average precision, and precision and recall (overall and per fraud
pattern) at each probability threshold. A measuring tool for docs/benchmarks.md and tests (it
imports scikit-learn for average precision); the detector's own decisions are ``replay``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streamflow_jobs.events import ParsedTransaction, parse_transaction
from streamflow_jobs.labels import Labels, load_labels
from streamflow_jobs.model.features import MODEL_INPUTS
from streamflow_jobs.model.loader import Scorer, load_model
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.rules.evaluator import RulesEvaluator
from streamflow_jobs.state import CustomerState


def stream_inputs(
    lines: Iterable[bytes], config: RulesConfig
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Transaction ids and their ``MODEL_INPUTS`` rows, in stream order, as the detector and
    ``streamflow train`` build them (invalid lines and repeated transactions left out)."""
    evaluator = RulesEvaluator(config)
    states: dict[str, CustomerState] = {}
    ids: list[str] = []
    rows: list[tuple[float, ...]] = []
    for raw in lines:
        if not raw.strip():
            continue
        parsed = parse_transaction(raw)
        if not isinstance(parsed, ParsedTransaction):
            continue
        txn = parsed.transaction
        state = states.setdefault(txn.customer_id, CustomerState())
        outcome = evaluator.evaluate(state, txn)
        if outcome.repeat_of is not None:
            continue
        ids.append(txn.transaction_id)
        rows.append(outcome.features + outcome.severities)
    x = np.array(rows, dtype=np.float64).reshape(len(rows), len(MODEL_INPUTS))
    return ids, x


def model_matrix(model: Scorer, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The columns of ``MODEL_INPUTS`` rows that ``model`` takes, in its order."""
    return x[:, [MODEL_INPUTS.index(name) for name in model.inputs]]


def evaluate(
    model: Scorer,
    ids: Sequence[str],
    x: npt.NDArray[np.float64],
    truth: Labels,
    thresholds: Sequence[float] = (0.5, 0.8),
) -> dict[str, Any]:
    """Average precision and precision/recall at each threshold of the model's score
    (a probability for gradient boosting, the calibrated anomaly score for the forest)."""
    from sklearn.metrics import average_precision_score  # noqa: PLC0415

    keep = [i for i, tid in enumerate(ids) if tid in truth.by_id]
    classes = [truth.by_id[ids[i]] for i in keep]
    y = np.array([truth.is_fraud(c) for c in classes], dtype=np.bool_)
    score = np.array(model.scores(model_matrix(model, x[keep])), dtype=np.float64)
    out: dict[str, Any] = {
        "model_version": model.model_version,
        "kind": model.kind,
        "rows": len(keep),
        "fraud": int(y.sum()),
        "average_precision": round(float(average_precision_score(y, score)), 4),
    }
    names = np.array([truth.names[c] for c in classes])
    for t in thresholds:
        alert = score >= t
        tp = int((alert & y).sum())
        by_pattern = {
            str(p): round(float(alert[names == p].mean()), 3)
            for p in sorted(set(names[y].tolist()))
        }
        out[f"at_{t:g}"] = {
            "alerts": int(alert.sum()),
            "precision": round(tp / max(int(alert.sum()), 1), 4),
            "recall": round(tp / max(int(y.sum()), 1), 4),
            "recall_by_pattern": by_pattern,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="artifact (default: the shipped model)")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--rules", type=Path)
    parser.add_argument("--threshold", type=float, action="append")
    args = parser.parse_args(argv)
    config = RulesConfig.from_yaml(args.rules) if args.rules else RulesConfig()
    model = load_model(args.model)
    with args.input.open("rb") as f:
        ids, x = stream_inputs(f, config)
    report = evaluate(model, ids, x, load_labels(args.labels), args.threshold or (0.5, 0.8))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
