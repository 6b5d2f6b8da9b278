"""Event contracts: Transaction (in), FraudDecision / FraudAlert and DeadLetter (out).

Transactions come in schema versions. v1 has no ``payment_method``; v2 is current. A newer version
than we know is read forward-compatibly: known fields are kept, unknown fields are ignored and
counted in ``ParsedTransaction.unknown_fields`` so the caller can surface a warning. Nothing that
fails to parse is ever dropped: :func:`parse_transaction` returns either a transaction or a
:class:`ParseFailure` that the caller turns into a :class:`DeadLetter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

CURRENT_SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)
# Payloads are kept in dead letters up to this size (the rest is cut, and the cut is recorded).
DEAD_LETTER_PAYLOAD_LIMIT = 10 * 1024
# A transaction is a few hundred bytes; anything this large is refused before JSON parsing.
MAX_EVENT_BYTES = 64 * 1024

NonEmptyId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]


class Transaction(BaseModel):
    """A payment as the platform reads it (the current schema, v2)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    transaction_id: NonEmptyId
    customer_id: NonEmptyId
    store_id: NonEmptyId
    product_id: NonEmptyId | None = None
    amount: Annotated[
        Decimal,
        Field(gt=0, max_digits=12, decimal_places=2, allow_inf_nan=False,
              description="Positive, at most 2 decimals and 12 digits; numeric strings accepted."),
    ]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO-4217 code")] = "BRL"
    payment_method: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    latitude: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    timestamp: AwareDatetime = Field(description="Event time; must carry a time zone.")
    schema_version: Annotated[int, Field(ge=1)] = CURRENT_SCHEMA_VERSION

    @field_validator("latitude", "longitude", mode="before")
    @classmethod
    def _no_bool_coordinates(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1.0; a boolean coordinate is a producer bug.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def event_time_ms(self) -> int:
        return int(self.timestamp.timestamp() * 1000)

    @property
    def local_hour(self) -> float:
        """Hour of day (fractional) in the event's own time zone: the customer's clock."""
        ts = self.timestamp
        return ts.hour + ts.minute / 60.0 + ts.second / 3600.0


class TransactionV1(BaseModel):
    """The first schema: no payment_method. Read and upgraded to :class:`Transaction`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transaction_id: NonEmptyId
    customer_id: NonEmptyId
    store_id: NonEmptyId
    product_id: NonEmptyId | None = None
    amount: Decimal
    currency: str = "BRL"
    latitude: float | None = None
    longitude: float | None = None
    timestamp: AwareDatetime
    schema_version: Literal[1] = 1


_FIELDS_BY_VERSION: dict[int, frozenset[str]] = {
    1: frozenset(TransactionV1.model_fields),
    2: frozenset(Transaction.model_fields),
}


@dataclass(frozen=True, slots=True)
class ParsedTransaction:
    transaction: Transaction
    # Fields present in the payload that this schema version does not define (ignored, counted).
    unknown_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParseFailure:
    error_type: Literal[
        "payload_too_large", "invalid_encoding", "invalid_json", "not_an_object", "validation_error"
    ]
    message: str


def parse_transaction(raw: bytes | str) -> ParsedTransaction | ParseFailure:
    """Parse one serialized event. Never raises for bad data: returns a ParseFailure instead."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogateescape")
    if len(raw) > MAX_EVENT_BYTES:
        return ParseFailure(
            "payload_too_large",
            f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} bytes",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        kind = "invalid_encoding" if "utf-8" in str(exc).lower() else "invalid_json"
        return ParseFailure(kind, f"not valid JSON: {exc}")
    if not isinstance(data, dict):
        return ParseFailure(
            "not_an_object", f"expected a JSON object, got {_json_type_name(data)}"
        )
    return transaction_from_dict(data)


def transaction_from_dict(data: dict[str, Any]) -> ParsedTransaction | ParseFailure:
    """Validate a decoded event of any schema version and upgrade it to the current one."""
    version = data.get("schema_version", CURRENT_SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int | str):
        return ParseFailure(
            "validation_error", f"schema_version: expected an integer, got {version!r}"
        )
    try:
        version = int(version)
    except ValueError:
        return ParseFailure(
            "validation_error", f"schema_version: expected an integer, got {version!r}"
        )
    if version < 1:
        return ParseFailure("validation_error", f"schema_version: must be >= 1, got {version}")

    known = _FIELDS_BY_VERSION.get(version, _FIELDS_BY_VERSION[CURRENT_SCHEMA_VERSION])
    unknown = tuple(sorted(k for k in data if k not in known))
    if unknown:
        data = {k: v for k, v in data.items() if k in known}
    if version == 1:
        data = {**data, "payment_method": None}
    # A newer producer is read with today's schema; its version number is preserved.
    data["schema_version"] = version
    try:
        txn = Transaction.model_validate(data)
    except ValidationError as exc:
        return ParseFailure("validation_error", format_validation_error(exc))
    return ParsedTransaction(txn, unknown)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field: ``amount: Input should be greater than 0``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _json_type_name(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


class Reason(BaseModel):
    """Why a rule contributed to a decision: what was observed against which threshold."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Rule code, e.g. FR-001")
    rule: str = Field(description="Rule name, e.g. high_value")
    observed: float
    threshold: float
    severity: float = Field(ge=0, le=1, description="How far past the threshold, 0.5 at it")
    message: str


class FraudDecision(BaseModel):
    """The detector's verdict on one transaction."""

    model_config = ConfigDict(frozen=True)

    transaction_id: str
    customer_id: str
    store_id: str
    amount: Decimal
    event_time: datetime
    score: float = Field(ge=0, le=1)
    rules_score: float = Field(ge=0, le=1)
    ml_score: float | None = Field(default=None, ge=0, le=1)
    is_alert: bool
    reasons: list[Reason]
    rules_version: str
    model_version: str | None


class FraudAlert(FraudDecision):
    """A decision whose score reached the alert threshold (published to the alerts topic)."""

    is_alert: Literal[True] = True


class SourceRef(BaseModel):
    """Where a record came from: a Kafka coordinate or a line of a file."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["kafka", "file"]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    path: str | None = None
    line: int | None = None


class DeadLetter(BaseModel):
    """A record that could not be processed, with everything needed to replay or debug it."""

    model_config = ConfigDict(frozen=True)

    error_type: str
    error_message: str
    stage: Literal["parse", "validate", "detect", "sink"]
    source: SourceRef
    payload: str = Field(description=f"Original payload, cut at {DEAD_LETTER_PAYLOAD_LIMIT} bytes")
    payload_bytes: int = Field(ge=0, description="Size of the original payload")
    payload_truncated: bool
    failed_at: datetime


def dead_letter_for(
    failure: ParseFailure, raw: bytes, source: SourceRef, failed_at: datetime | None = None
) -> DeadLetter:
    cut = raw[:DEAD_LETTER_PAYLOAD_LIMIT]
    return DeadLetter(
        error_type=failure.error_type,
        error_message=failure.message,
        stage="validate" if failure.error_type == "validation_error" else "parse",
        source=source,
        # backslashreplace keeps stray bytes visible (\xff) instead of losing them.
        payload=cut.decode("utf-8", errors="backslashreplace"),
        payload_bytes=len(raw),
        payload_truncated=len(raw) > DEAD_LETTER_PAYLOAD_LIMIT,
        failed_at=failed_at or datetime.now(UTC),
    )


CONTRACTS: dict[str, type[BaseModel]] = {
    "transaction": Transaction,
    "transaction-v1": TransactionV1,
    "fraud-decision": FraudDecision,
    "fraud-alert": FraudAlert,
    "dead-letter": DeadLetter,
}
