"""Event contracts: Transaction (in), FraudDecision / FraudAlert and DeadLetter (out).

The contracts are msgspec Structs: decoding and validating a transaction costs ~3 us, where a
pydantic model cost ~19 us, which alone would have used the whole per-event budget of the replay
and of the Flink job. JSON Schemas are generated from these same classes (contracts.py).
The per-event Structs are declared ``gc=False``: they hold scalars (a decision also holds its
list of reasons, which never points back), so they can form no reference cycle. Tracked, they
made the cyclic garbage collector cost ~6 of ~28 us per replayed event (measured by disabling it).

Transactions come in schema versions. v1 has no ``payment_method``; v2 is current. A newer version
than we know is read forward-compatibly: known fields are kept, unknown fields are ignored and
reported in ``ParsedTransaction.unknown_fields`` so the caller can count a warning. Nothing that
fails to parse is ever dropped: :func:`parse_transaction` returns either a transaction or a
:class:`ParseFailure` that the caller turns into a :class:`DeadLetter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from streamflow_jobs.jsonkeys import repeated_key, top_level_repeats

CURRENT_SCHEMA_VERSION = 2
# Payloads are kept in dead letters up to this size (the rest is cut, and the cut is recorded).
DEAD_LETTER_PAYLOAD_LIMIT = 10 * 1024
# A transaction is a few hundred bytes; anything this large is refused before JSON parsing.
MAX_EVENT_BYTES = 64 * 1024
MAX_AMOUNT_DIGITS = 12
_AMOUNT_LIMIT = Decimal(10) ** (MAX_AMOUNT_DIGITS - 2)
_CENT = Decimal("0.01")

# Identifiers must hold a non-blank character: checked in __post_init__ (a per-field regex
# here cost more than the whole JSON decode).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, description="Non-empty identifier")]
_ID_FIELDS = ("transaction_id", "customer_id", "store_id", "product_id")
# Currency codes already checked: a set lookup instead of three string scans per event.
_CURRENCIES_SEEN: set[str] = set()


class Transaction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A payment as the platform reads it (schema v2; v1 lacks payment_method)."""

    transaction_id: Id
    customer_id: Id
    store_id: Id
    amount: Annotated[
        Decimal,
        msgspec.Meta(
            description="Positive, at most 2 decimals and 12 digits; JSON number or numeric string"
        ),
    ]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True, description="Event time with zone")]
    product_id: Id | None = None
    currency: Annotated[
        str,
        msgspec.Meta(min_length=3, max_length=3, description="ISO-4217: three upper-case letters"),
    ] = "BRL"
    payment_method: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    schema_version: Annotated[int, msgspec.Meta(ge=1)] = CURRENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Constraints msgspec cannot express (or only with a slow per-field regex); a ValueError
        # here is reported by msgspec as a validation error naming the field first. This runs
        # for every event, so the common case is a few C calls (see docs/benchmarks.md).
        if (
            self.transaction_id.isspace()
            or self.customer_id.isspace()
            or self.store_id.isspace()
            or (self.product_id is not None and self.product_id.isspace())
        ):
            blank = next(n for n in _ID_FIELDS if (getattr(self, n) or "x").isspace())
            raise ValueError(f"{blank}: must not be blank")
        currency = self.currency
        if currency not in _CURRENCIES_SEEN:
            if not (currency.isascii() and currency.isalpha() and currency.isupper()):
                raise ValueError(f"currency: must be three upper-case letters, got {currency!r}")
            _CURRENCIES_SEEN.add(currency)  # at most 26 ** 3 entries
        amount = self.amount
        if not amount.is_finite():
            raise ValueError("amount: must be a finite number")
        if amount <= 0:
            raise ValueError("amount: must be greater than 0")
        if amount >= _AMOUNT_LIMIT:
            raise ValueError(
                f"amount: must have at most {MAX_AMOUNT_DIGITS} digits in total "
                f"({MAX_AMOUNT_DIGITS - 2} before the decimal point)"
            )
        if amount.quantize(_CENT) != amount:  # "1.50" and "1.500" pass, "1.505" does not
            raise ValueError("amount: must have at most 2 decimal places")

    @property
    def local_hour(self) -> float:
        """Hour of day (fractional) in the event's own time zone: the customer's clock."""
        ts = self.timestamp
        return ts.hour + ts.minute / 60.0 + ts.second / 3600.0


class TransactionV1(msgspec.Struct, frozen=True):
    """Schema v1, for its JSON Schema only: read by :func:`parse_transaction` and upgraded."""

    transaction_id: Id
    customer_id: Id
    store_id: Id
    amount: Decimal
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    product_id: Id | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "BRL"
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    schema_version: Literal[1] = 1


_KNOWN_FIELDS = frozenset(Transaction.__struct_fields__)
_V1_FIELDS = frozenset(TransactionV1.__struct_fields__)
_V2_ONLY_FIELDS = _KNOWN_FIELDS - _V1_FIELDS
_decode_strict = msgspec.json.Decoder(Transaction)
# The tolerant path: the top level's names (values left undecoded), and each version's fields.
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


class _TransactionAnyFields(Transaction, frozen=True, gc=False, forbid_unknown_fields=False):
    """Transaction, ignoring fields it does not define: how a newer version is read."""


_decode_v1 = msgspec.json.Decoder(TransactionV1).decode  # ignores v2's fields, by definition
_decode_any_fields = msgspec.json.Decoder(_TransactionAnyFields).decode


class ParsedTransaction(msgspec.Struct, frozen=True, gc=False):
    transaction: Transaction
    # Fields present in the payload that its schema version does not define (ignored, counted).
    unknown_fields: tuple[str, ...] = ()


ErrorType = Literal[
    "payload_too_large",
    "invalid_encoding",
    "invalid_json",
    "not_an_object",
    "duplicate_key",
    "validation_error",
    "timestamp_in_future",
    "conflicting_duplicate",
]
Stage = Literal["ingest", "parse", "validate", "detect", "sink"]
_STAGE_OF: dict[str, Stage] = {
    "validation_error": "validate",
    "timestamp_in_future": "validate",
    "conflicting_duplicate": "detect",
}


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why an event cannot be processed: it becomes a dead letter (never raised, never dropped)."""

    error_type: ErrorType
    message: str

    @property
    def stage(self) -> Stage:
        return _STAGE_OF.get(self.error_type, "parse")


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NO_OFFSET = timedelta(0)


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch, in integer arithmetic (exact; sub-milliseconds floored; a
    naive time is read as UTC). The evaluator inlines the same arithmetic on its hot path."""
    offset = ts.utcoffset() or _NO_OFFSET
    return (
        (ts.toordinal() - _EPOCH_ORDINAL) * 86_400_000
        + (ts.hour * 3600 + ts.minute * 60 + ts.second - offset.days * 86400 - offset.seconds)
        * 1000
        + ts.microsecond // 1000
    )


# ---- repeated keys (jsonkeys.py) ----------------------------------------------------------------
def _repeated_key(raw: bytes) -> ParseFailure | None:
    name = repeated_key(raw)
    if name is None:
        return None
    return ParseFailure("duplicate_key", f"key {name!r} appears more than once")


def _split_error(text: str) -> tuple[str, str | None]:
    """msgspec says 'Expected `float` >= -90.0, got -91 - at `$.latitude`': (what, field)."""
    what, at, where = text.rpartition(" - at `$")
    if not at:
        return text, None
    return what, where.rstrip("`").lstrip(".") or None


def _validation_message(exc: msgspec.ValidationError) -> str:
    """The field first: 'latitude: Expected `float` >= -90.0, got -91'."""
    what, field = _split_error(str(exc))
    return f"{field}: {what}" if field else what


def parse_transaction(raw: bytes | str) -> ParsedTransaction | ParseFailure:
    """Parse one serialized event. Never raises for bad data: returns a ParseFailure instead."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogateescape")
    if len(raw) > MAX_EVENT_BYTES:
        return too_large(len(raw))
    try:
        txn = _decode_strict.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = _split_error(text)[1]
        if "unknown field" in text or field == "schema_version" or field in _V2_ONLY_FIELDS:
            # Whether that field counts depends on the version: the tolerant path decides.
            return _parse_tolerant(raw)
        return _classify_failure(raw, exc)
    except msgspec.DecodeError as exc:
        return _classify_failure(raw, exc)
    except UnicodeDecodeError as exc:  # stray bytes inside a JSON string
        return _not_utf8(exc)
    if txn.schema_version != CURRENT_SCHEMA_VERSION:
        return _parse_tolerant(raw)  # v1 or newer: which fields count depends on the version
    if top_level_repeats(raw) and (failure := _repeated_key(raw)) is not None:
        return failure
    return ParsedTransaction(txn)


def too_large(size: int) -> ParseFailure:
    """The failure for an event of ``size`` bytes, over :data:`MAX_EVENT_BYTES`."""
    return ParseFailure(
        "payload_too_large", f"event is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes"
    )


def _not_utf8(bad: UnicodeDecodeError) -> ParseFailure:
    return ParseFailure("invalid_encoding", f"not UTF-8: {bad.reason} at byte {bad.start}")


def _classify_failure(raw: bytes, exc: msgspec.DecodeError) -> ParseFailure:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _not_utf8(bad)
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        if text.startswith("Expected `object`"):
            got = text.removeprefix("Expected `object`, got `").rstrip("`")
            return ParseFailure("not_an_object", f"expected a JSON object, got {got}")
        return ParseFailure("validation_error", _validation_message(exc))
    return ParseFailure("invalid_json", f"not valid JSON: {exc}")


def _parse_tolerant(raw: bytes) -> ParsedTransaction | ParseFailure:
    """The slower path (~4 us): schema v1, a newer version, or unknown fields (counted, then
    ignored). The version picks the field set; the result is an ordinary Transaction, checked
    as strictly as on the fast path."""
    try:
        fields = _decode_fields(raw)
    except msgspec.DecodeError as exc:
        return _classify_failure(raw, exc)
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    if top_level_repeats(raw) and (failure := _repeated_key(raw)) is not None:
        return failure
    version_json = fields.get("schema_version")
    version = CURRENT_SCHEMA_VERSION if version_json is None else msgspec.json.decode(version_json)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return ParseFailure(
            "validation_error", f"schema_version: expected an integer >= 1, got {version!r}"
        )
    known = _V1_FIELDS if version == 1 else _KNOWN_FIELDS
    decode = _decode_v1 if version == 1 else _decode_any_fields
    try:
        txn = msgspec.convert(decode(raw), Transaction, from_attributes=True)
    except msgspec.ValidationError as exc:
        return ParseFailure("validation_error", _validation_message(exc))
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    return ParsedTransaction(txn, tuple(sorted(k for k in fields if k not in known)))


class Reason(msgspec.Struct, frozen=True, gc=False):
    """Why a rule contributed to a decision: what was observed against which threshold."""

    code: str  # rule code, e.g. FR-001
    rule: str  # rule name, e.g. high_value
    observed: float
    threshold: float
    severity: float  # 0.25 at the threshold, 1 at the rule's saturation point
    message: str


class ShadowVerdict(msgspec.Struct, frozen=True, gc=False):
    """What a challenger (rules and/or model running in shadow) would have decided; it changes
    nothing about the decision that carries it."""

    score: float
    rules_score: float
    action: Literal["allow", "review", "block"]
    is_alert: bool
    ml_score: float | None
    reasons: list[Reason]
    rules_version: str
    model_version: str | None


class FraudDecision(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The detector's verdict on one transaction (one line of `streamflow replay` output).
    ``shadow`` is present only when a challenger runs beside the detector."""

    transaction_id: str
    customer_id: str
    store_id: str
    amount: Decimal
    event_time: datetime
    score: Annotated[float, msgspec.Meta(ge=0, le=1)]
    rules_score: Annotated[float, msgspec.Meta(ge=0, le=1)]
    ml_score: Annotated[float, msgspec.Meta(ge=0, le=1)] | None
    is_alert: bool  # the action is review or block
    action: Literal["allow", "review", "block"]
    reasons: list[Reason]
    rules_version: str
    model_version: str | None
    shadow: ShadowVerdict | None = None


class FraudAlert(FraudDecision, frozen=True, gc=False, omit_defaults=True):
    """A decision whose score reached the alert threshold (published to the alerts topic)."""


class SourceRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where a record came from: a Kafka coordinate or a line of a file."""

    kind: Literal["kafka", "file"]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    path: str | None = None
    line: int | None = None


class DeadLetter(msgspec.Struct, frozen=True):
    """A record that could not be processed, with everything needed to replay or debug it."""

    error_type: str
    error_message: str
    stage: Stage
    source: SourceRef
    payload: str  # the original payload, cut at DEAD_LETTER_PAYLOAD_LIMIT bytes
    payload_bytes: Annotated[int, msgspec.Meta(ge=0)]  # size of the original payload
    payload_truncated: bool
    failed_at: datetime


def dead_letter_for(
    failure: ParseFailure,
    raw: bytes,
    source: SourceRef,
    failed_at: datetime | None = None,
    size: int | None = None,
) -> DeadLetter:
    """``raw`` may be only the head of a payload whose true ``size`` is larger (skimmed)."""
    size = len(raw) if size is None else size
    cut = raw[:DEAD_LETTER_PAYLOAD_LIMIT]
    return DeadLetter(
        error_type=failure.error_type,
        error_message=failure.message,
        stage=failure.stage,
        source=source,
        # backslashreplace keeps stray bytes visible (\xff) instead of losing them.
        payload=cut.decode("utf-8", errors="backslashreplace"),
        payload_bytes=size,
        payload_truncated=size > len(cut),
        failed_at=failed_at or datetime.now(UTC),
    )


CONTRACTS: dict[str, Any] = {
    "transaction": Transaction,
    "transaction-v1": TransactionV1,
    "fraud-decision": FraudDecision,
    "fraud-alert": FraudAlert,
    "dead-letter": DeadLetter,
}
