"""Idempotency per transaction id: what the customer state remembers of a decided transaction.

A producer retry or a file sent twice must not be scored twice (it would inflate the velocity
count) and must get the same answer: the state keeps each of the customer's last few
transactions (``state.DEDUP_MEMORY``) with its content and its decision. A copy with the same
id and the same content gets the first decision again and changes nothing; a copy with the same
id and different content is a conflict, named field by field, and becomes a dead letter.

In memory (the replay, and a Flink event before its state is stored) an entry holds the live
Transaction and FraudDecision; in the encoded state it holds a :class:`Remembered` record
(msgpack: data only, never pickle).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from streamflow_jobs.events import FraudDecision, Reason, Transaction, epoch_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What makes two copies "the same transaction" (besides the id, and the customer, which is the
# state's key). The schema version is not content: a v1 retry of a v2 event is the same payment.
CONTENT_FIELDS = (
    "store_id",
    "product_id",
    "amount",
    "timestamp",
    "currency",
    "payment_method",
    "latitude",
    "longitude",
)
# store, product, amount in cents, event time in ms, currency, payment method, latitude, longitude
Content = tuple[str, str | None, int, int, str, str | None, float | None, float | None]
_OTHERS = "store, product, currency, payment method or location"


class StoredReason(msgspec.Struct, array_like=True, frozen=True, gc=False):
    code: str
    rule: str
    observed: float
    threshold: float
    severity: float
    message: str


class Remembered(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A decided transaction as the encoded state keeps it (floats exact)."""

    content: Content
    score: float
    rules_score: float
    ml_score: float | None
    is_alert: bool
    action: str
    reasons: list[StoredReason]
    rules_version: str
    model_version: str | None


_REASON_FIELDS = StoredReason.__struct_fields__
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Remembered).decode


def cents(amount: Decimal) -> int:
    """The amount in cents, as the evaluator computes it (positive, 2 decimals at most: exact)."""
    return int(float(amount) * 100 + 0.5)


def content_of(txn: Transaction) -> Content:
    """The transaction's content, normalised (10.5 == 10.50; one instant in any time zone)."""
    return (
        txn.store_id,
        txn.product_id,
        cents(txn.amount),
        epoch_ms(txn.timestamp),
        txn.currency,
        txn.payment_method,
        txn.latitude,
        txn.longitude,
    )


def _others(c: Content) -> tuple[object, ...]:
    return (c[0], c[1], c[4], c[5], c[6], c[7])


def encode_remembered(txn: Transaction, decision: FraudDecision) -> bytes:
    return _encode(
        Remembered(
            content_of(txn),
            decision.score,
            decision.rules_score,
            decision.ml_score,
            decision.is_alert,
            decision.action,
            [StoredReason(*(getattr(r, f) for f in _REASON_FIELDS)) for r in decision.reasons],
            decision.rules_version,
            decision.model_version,
        )
    )


def conflict(entry: Any, txn: Transaction) -> str | None:
    """None if ``txn`` is the remembered transaction again, else what differs, in one line
    (amount and time exactly; the other fields together: the in-memory entry keeps only a
    hash of them, and the message is the same whichever the entry holds)."""
    again = content_of(txn)
    if entry.record is not None:
        first = _decode(entry.record).content
        first_cents, first_ms, same_others = first[2], first[3], _others(first) == _others(again)
    else:
        first_cents, first_ms = entry.amount_cents, entry.ms
        same_others = entry.other == hash(_others(again))
    diffs = []
    if first_cents != again[2]:
        diffs.append(f"amount {again[2] / 100:.2f} (first copy: {first_cents / 100:.2f})")
    if first_ms != again[3]:
        diffs.append(f"timestamp {_when(again[3])} (first copy: {_when(first_ms)})")
    if not same_others:
        diffs.append(f"other content differs ({_OTHERS})")
    if not diffs:
        return None
    return f"conflicting duplicate of transaction {txn.transaction_id}: " + "; ".join(diffs)


def recall(entry: Any, txn: Transaction) -> FraudDecision:
    """The first decision of a transaction seen again (``txn`` has the same content)."""
    if entry.decided:
        ml = entry.ml_score
        return FraudDecision(
            txn.transaction_id,
            txn.customer_id,
            txn.store_id,
            txn.amount,
            txn.timestamp,
            entry.score,
            entry.rules_score,
            None if math.isnan(ml) else ml,  # NaN: no model
            entry.alert,
            entry.action,
            entry.reasons if entry.reasons is not None else [],
            entry.rules_version,
            entry.model_version,
        )
    stored = _decode(entry.record)
    return FraudDecision(
        txn.transaction_id,
        txn.customer_id,
        txn.store_id,
        txn.amount,
        txn.timestamp,
        stored.score,
        stored.rules_score,
        stored.ml_score,
        stored.is_alert,
        stored.action,  # type: ignore[arg-type]
        [Reason(*(getattr(r, f) for f in _REASON_FIELDS)) for r in stored.reasons],
        stored.rules_version,
        stored.model_version,
    )


def _when(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")
