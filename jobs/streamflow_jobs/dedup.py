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

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from streamflow_jobs.events import FraudDecision, Reason, Transaction, epoch_ms

_CENT = Decimal("0.01")
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
Content = tuple[str, str | None, str, int, str, str | None, float | None, float | None]


class StoredReason(msgspec.Struct, array_like=True, frozen=True, gc=False):
    code: str
    rule: str
    observed: float
    threshold: float
    severity: float
    message: str


class Remembered(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A decided transaction as the encoded state keeps it (floats exact, amounts as text)."""

    content: Content
    score: float
    rules_score: float
    ml_score: float | None
    is_alert: bool
    reasons: list[StoredReason]
    rules_version: str
    model_version: str | None


_REASON_FIELDS = StoredReason.__struct_fields__
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Remembered).decode


def content_of(txn: Transaction) -> Content:
    """The transaction's content, normalised (10.5 == 10.50; one instant in any time zone)."""
    return (
        txn.store_id,
        txn.product_id,
        str(txn.amount.quantize(_CENT)),
        epoch_ms(txn.timestamp),
        txn.currency,
        txn.payment_method,
        txn.latitude,
        txn.longitude,
    )


def encode_remembered(txn: Any, decision: Any) -> bytes:
    d: FraudDecision = decision
    return _encode(
        Remembered(
            content_of(txn),
            d.score,
            d.rules_score,
            d.ml_score,
            d.is_alert,
            [StoredReason(*(getattr(r, f) for f in _REASON_FIELDS)) for r in d.reasons],
            d.rules_version,
            d.model_version,
        )
    )


def _first_copy(entry: Any) -> tuple[Content, Remembered | None]:
    if entry.txn is not None:
        return content_of(entry.txn), None
    stored = _decode(entry.record)
    return stored.content, stored


def conflict(entry: Any, txn: Transaction) -> str | None:
    """None if ``txn`` is the remembered transaction again, else what differs, in one line."""
    first, _ = _first_copy(entry)
    again = content_of(txn)
    if first == again:
        return None
    diffs = [
        f"{name} {_show(name, b)} (first copy: {_show(name, a)})"
        for name, a, b in zip(CONTENT_FIELDS, first, again, strict=True)
        if a != b
    ]
    return f"conflicting duplicate of transaction {txn.transaction_id}: " + "; ".join(diffs)


def recall(entry: Any, txn: Transaction) -> FraudDecision:
    """The first decision of a transaction seen again (``txn`` has the same content)."""
    if entry.decision is not None:
        decision: FraudDecision = entry.decision
        return decision
    _, stored = _first_copy(entry)
    assert stored is not None
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
        [Reason(*(getattr(r, f) for f in _REASON_FIELDS)) for r in stored.reasons],
        stored.rules_version,
        stored.model_version,
    )


def _show(name: str, value: object) -> str:
    if name == "timestamp" and isinstance(value, int):
        when = _EPOCH + timedelta(milliseconds=value)
        return when.isoformat().replace("+00:00", "Z")
    return "none" if value is None else str(value)
