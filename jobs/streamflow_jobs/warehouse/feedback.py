"""``streamflow feedback import``: confirmed verdicts into ``bronze.feedback``, idempotently.

One JSON object per line: ``transaction_id``, ``is_fraud`` (true/false or 1/0), optional
``source`` (default "unknown") and ``reported_at`` (ISO 8601; without a zone it is read as
UTC). Other keys are ignored, so the generator's labels file imports as it is. The file is
checked whole before anything is written: a bad line is one error naming the line, and nothing
is imported. A verdict is keyed by (transaction_id, source, reported_at): importing a file again
changes nothing; a later report, or another source, adds a verdict, and silver keeps the latest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg

MAX_LINE_BYTES = 4096
MAX_LINES = 10_000_000


class FeedbackError(ValueError):
    """A feedback file that cannot be imported (one line, naming the line)."""


class Verdict(msgspec.Struct, frozen=True):
    transaction_id: str
    is_fraud: bool | int
    source: str | None = None
    reported_at: datetime | None = None


_decode = msgspec.json.Decoder(Verdict).decode


@dataclass(frozen=True)
class ImportResult:
    lines: int
    verdicts: int  # distinct (transaction_id, source, reported_at) in the file
    inserted: int
    changed: int  # an existing verdict whose is_fraud the file changed
    unchanged: int


def _verdict(raw: bytes, where: str) -> tuple[str, bool, str, datetime | None]:
    if len(raw) > MAX_LINE_BYTES:
        raise FeedbackError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
    try:
        v = _decode(raw)
    except msgspec.DecodeError as exc:
        raise FeedbackError(f"{where}: not a verdict ({exc})") from exc
    tid = v.transaction_id
    if not tid.strip() or len(tid) > 128:
        raise FeedbackError(f"{where}: transaction_id must be 1-128 characters, not blank")
    if isinstance(v.is_fraud, bool):
        fraud = v.is_fraud
    elif v.is_fraud in (0, 1):
        fraud = bool(v.is_fraud)
    else:
        raise FeedbackError(f"{where}: is_fraud must be true/false or 1/0, got {v.is_fraud}")
    source = "unknown" if v.source is None else v.source
    if not source.strip() or len(source) > 64:
        raise FeedbackError(f"{where}: source must be 1-64 characters, not blank")
    at = v.reported_at
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return tid, fraud, source, at


def read_verdicts(path: Path) -> tuple[int, dict[tuple[str, str, datetime | None], bool]]:
    """(non-blank lines, verdicts by key); a key repeated in the file keeps its last line."""
    verdicts: dict[tuple[str, str, datetime | None], bool] = {}
    lines = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n > MAX_LINES:
                raise FeedbackError(f"{path}: more than {MAX_LINES} lines")
            if not raw.strip():
                continue
            lines += 1
            tid, fraud, source, at = _verdict(raw.rstrip(b"\r\n"), f"{path}:{n}")
            verdicts[(tid, source, at)] = fraud
    return lines, verdicts


def import_feedback(dsn: str, path: Path) -> ImportResult:
    lines, verdicts = read_verdicts(path)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute(
            "CREATE TEMP TABLE incoming (transaction_id text, is_fraud boolean, source text,"
            " reported_at timestamptz) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY incoming FROM STDIN") as copy:
            for (tid, source, at), fraud in verdicts.items():
                copy.write_row((tid, fraud, source, at))
        rows = conn.execute(
            "INSERT INTO bronze.feedback AS f (transaction_id, is_fraud, source, reported_at)"
            " SELECT transaction_id, is_fraud, source, reported_at FROM incoming"
            " ON CONFLICT (transaction_id, source, reported_at) DO UPDATE"
            " SET is_fraud = excluded.is_fraud, imported_at = now()"
            " WHERE f.is_fraud IS DISTINCT FROM excluded.is_fraud"
            " RETURNING (xmax = 0) AS inserted"
        ).fetchall()
    inserted = sum(1 for (new,) in rows if new)
    changed = len(rows) - inserted
    return ImportResult(lines, len(verdicts), inserted, changed, len(verdicts) - len(rows))
