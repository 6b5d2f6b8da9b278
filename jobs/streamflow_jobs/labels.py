"""Ground truth for backtests: one JSON object per line, ``transaction_id`` and ``is_fraud``.

Labels are validated like events, because a wrong label silently corrupts every metric computed
from it: ``is_fraud`` is true/false or 1/0 and nothing else ("false" is not false), the optional
``pattern`` names the kind of fraud (or legitimate traffic) but never overrides the flag, a
transaction labelled twice must agree, and other keys are ignored. Any violation is an error that
names the line. How many of the decisions the labels cover is reported by their users.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Below this share of decisions with a label, metrics describe a different population.
LOW_COVERAGE = 0.95
MAX_LABEL_LINE = 64 * 1024


class LabelError(ValueError):
    """A label file that cannot be trusted (the message names the file and line)."""


@dataclass(frozen=True)
class LabelClass:
    """A kind of labelled transaction: its pattern name and whether it is fraud."""

    name: str
    is_fraud: bool


@dataclass(frozen=True)
class Labels:
    """Transaction id -> index into ``classes``."""

    by_id: dict[str, int]
    classes: list[LabelClass]
    repeated: int = 0  # ids labelled more than once, consistently

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def is_fraud(self, index: int) -> bool:
        return self.classes[index].is_fraud


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    return None


def load_labels(path: Path) -> Labels:
    """Read and validate a label file; raise LabelError naming the first bad line."""

    def records() -> Iterator[tuple[str, Any]]:
        with path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                if len(line) > MAX_LABEL_LINE:
                    raise LabelError(
                        f"{where}: a label line of {len(line)} bytes (not a label file?)"
                    )
                try:
                    yield where, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise LabelError(f"{where}: not JSON ({exc})") from exc

    return labels_of(records())


def labels_of(records: Iterable[tuple[str, Any] | dict[str, Any]]) -> Labels:
    """Labels from records (``{"transaction_id", "is_fraud", "pattern"?}``, each optionally
    with where it came from for the error message), validated as a label file is."""
    classes: dict[tuple[str, bool], int] = {}
    by_id: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    repeated = 0
    for n, item in enumerate(records, start=1):
        where, row = item if isinstance(item, tuple) else (f"label {n}", item)
        if not isinstance(row, dict):
            raise LabelError(f"{where}: expected a JSON object, got {type(row).__name__}")
        tid = row.get("transaction_id")
        if not isinstance(tid, str) or not tid.strip():
            raise LabelError(f"{where}: transaction_id must be a non-empty string")
        fraud = _flag(row.get("is_fraud"))
        if fraud is None:
            raise LabelError(
                f"{where}: is_fraud must be true/false or 1/0, got {row.get('is_fraud')!r}"
            )
        pattern = row.get("pattern")
        if pattern is not None and not isinstance(pattern, str):
            raise LabelError(f"{where}: pattern must be a string, got {pattern!r}")
        name = pattern or ("fraud" if fraud else "legit")
        index = classes.setdefault((name, fraud), len(classes))
        known = by_id.get(tid)
        if known is None:
            by_id[tid] = index
            line = where.rpartition(":")[2]  # "file:12" -> "line 12"
            first_seen[tid] = f"line {line}" if line.isdigit() else where
            continue
        previous = next(c for c, i in classes.items() if i == known)
        if previous[1] != fraud:
            raise LabelError(
                f"{where}: transaction {tid} is labelled "
                f"{'fraud' if fraud else 'legitimate'} here and "
                f"{'fraud' if previous[1] else 'legitimate'} on {first_seen[tid]}"
            )
        repeated += 1
    ordered = sorted(classes, key=classes.__getitem__)
    names = [name for name, _ in ordered]
    return Labels(
        by_id,
        [
            # The same pattern name labelled both ways is shown as two kinds.
            LabelClass(
                name
                if names.count(name) == 1
                else f"{name} ({'fraud' if fraud else 'legitimate'})",
                fraud,
            )
            for name, fraud in ordered
        ],
        repeated,
    )


def coverage_warning(labelled: int, total: int) -> str | None:
    """A warning when labels cover too little of what was decided (None when they are fine)."""
    if total == 0:
        return None
    share = labelled / total
    if share >= LOW_COVERAGE:
        return None
    if labelled == 0:
        return f"no decision has a label: the labels match none of the {total} transactions"
    return (
        f"labels cover only {share:.1%} of the {total} transactions ({labelled}): "
        "metrics describe the labelled part only"
    )
