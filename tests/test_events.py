"""Event contracts: valid, invalid (field named), versions, JSON Schemas."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow_jobs.contracts import SCHEMA_DIR, json_schema
from streamflow_jobs.events import (
    CONTRACTS,
    DEAD_LETTER_PAYLOAD_LIMIT,
    ParsedTransaction,
    ParseFailure,
    SourceRef,
    Transaction,
    TransactionV1,
    dead_letter_for,
    parse_transaction,
)

pytestmark = pytest.mark.unit

VALID = {
    "transaction_id": "t-1",
    "customer_id": "C1",
    "store_id": "S01",
    "product_id": "P001",
    "amount": 123.45,
    "currency": "BRL",
    "payment_method": "pix",
    "latitude": -23.55,
    "longitude": -46.63,
    "timestamp": "2026-01-05T10:00:00-03:00",
    "schema_version": 2,
}


def parse(**changes: object) -> ParsedTransaction | ParseFailure:
    event = {**VALID, **changes}
    return parse_transaction(orjson.dumps({k: v for k, v in event.items() if v is not ...}))


def test_valid_event_parses() -> None:
    result = parse()
    assert isinstance(result, ParsedTransaction)
    assert str(result.transaction.amount) == "123.45"
    assert result.transaction.local_hour == 10.0
    assert result.unknown_fields == ()


@pytest.mark.parametrize("amount", ["12.30", 7, "0.01", 9999999999.99])
def test_amount_accepts_numbers_and_numeric_strings(amount: object) -> None:
    assert isinstance(parse(amount=amount), ParsedTransaction)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 12.345}, "amount"),
        ({"amount": 99999999999.99}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": ...}, "amount"),
        ({"latitude": 90.5}, "latitude"),
        ({"longitude": -180.01}, "longitude"),
        ({"latitude": "north"}, "latitude"),
        ({"currency": "brl"}, "currency"),
        ({"currency": "REAL"}, "currency"),
        ({"timestamp": "2026-01-05T10:00:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"customer_id": "   "}, "customer_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"store_id": None}, "store_id"),
        ({"schema_version": 0}, "schema_version"),
        ({"schema_version": "two"}, "schema_version"),
    ],
)
def test_invalid_field_is_named(changes: dict[str, object], field: str) -> None:
    result = parse(**changes)
    assert isinstance(result, ParseFailure), result
    assert result.error_type == "validation_error"
    assert result.message.startswith(field) or f"`{field}`" in result.message, result.message


@pytest.mark.parametrize(
    ("raw", "error_type"),
    [
        (b"{not json", "invalid_json"),
        (b'{"amount": NaN}', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"\xff\xfe{}", "invalid_encoding"),
        (b'{"transaction_id": "' + b"x" * 70_000 + b'"}', "payload_too_large"),
    ],
)
def test_malformed_payloads(raw: bytes, error_type: str) -> None:
    result = parse_transaction(raw)
    assert isinstance(result, ParseFailure)
    assert result.error_type == error_type, result


def test_v1_is_upgraded_and_its_payment_method_is_not_a_field() -> None:
    v1 = parse(schema_version=1, payment_method=...)
    assert isinstance(v1, ParsedTransaction)
    assert v1.transaction.payment_method is None and v1.transaction.schema_version == 1
    v1_with_method = parse(schema_version=1)
    assert isinstance(v1_with_method, ParsedTransaction)
    assert v1_with_method.unknown_fields == ("payment_method",)
    assert v1_with_method.transaction.payment_method is None


def test_newer_version_is_read_forward_compatibly() -> None:
    v3 = parse(schema_version=3, device_id="d-9", channel="app")
    assert isinstance(v3, ParsedTransaction)
    assert v3.transaction.schema_version == 3
    assert str(v3.transaction.amount) == "123.45"
    assert v3.unknown_fields == ("channel", "device_id")


def test_dead_letter_truncates_and_keeps_stray_bytes() -> None:
    raw = b"\xff" + b"a" * (DEAD_LETTER_PAYLOAD_LIMIT * 2)
    failure = parse_transaction(raw)
    assert isinstance(failure, ParseFailure)
    letter = dead_letter_for(failure, raw, SourceRef(kind="file", path="x", line=3))
    assert letter.payload_truncated and letter.payload_bytes == len(raw)
    assert letter.payload.startswith("\\xff")
    assert len(letter.payload.encode()) <= DEAD_LETTER_PAYLOAD_LIMIT + 3


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parser_never_raises(raw: bytes) -> None:
    assert isinstance(parse_transaction(raw), ParsedTransaction | ParseFailure)


@given(
    st.dictionaries(
        st.sampled_from([*sorted(VALID), "extra"]),
        st.none() | st.integers() | st.floats() | st.text(max_size=20) | st.booleans(),
        max_size=12,
    )
)
def test_parser_never_raises_on_objects(event: dict[str, object]) -> None:
    raw = json.dumps({**VALID, **event}).encode()  # NaN, Infinity and huge ints included
    assert isinstance(parse_transaction(raw), ParsedTransaction | ParseFailure)


def test_generated_events_always_parse(small_world: tuple[Path, Path, list[str]]) -> None:
    events, _, _ = small_world
    lines = events.read_bytes().splitlines()
    failures = [r for r in map(parse_transaction, lines) if isinstance(r, ParseFailure)]
    assert len(lines) == 5000 and failures == []


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_committed_json_schemas_match_the_contracts(name: str) -> None:
    committed = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    assert committed == json_schema(name), "run `streamflow schemas` and commit the result"


def test_json_schema_rejects_what_the_parser_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema("transaction")
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError, match=r"latitude|90"):
        jsonschema.validate({**VALID, "latitude": 95}, schema)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from([*sorted(VALID), "payment_method", "extra", "device_id"]),
        st.none()
        | st.integers(-5, 5)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(["10.50", "BRL", "2026-01-05T10:00:00Z", " ", "pix"])
        | st.booleans(),
        max_size=6,
    ),
    version=st.sampled_from([1, 2, 3, 7]),
)
def test_the_tolerant_path_keeps_exactly_the_known_fields(
    changes: dict[str, object], version: int
) -> None:
    """v1, newer versions and unknown fields take the tolerant path: it must decide exactly as
    the strict decoder does on a payload holding only the fields its version defines."""
    event = {**VALID, **changes, "schema_version": version}
    known = set(TransactionV1.__struct_fields__ if version == 1 else Transaction.__struct_fields__)
    only_known = json.dumps({k: v for k, v in event.items() if k in known}).encode()
    result = parse_transaction(json.dumps(event).encode())
    try:
        reference = msgspec.json.Decoder(Transaction).decode(only_known)
    except msgspec.ValidationError:
        assert isinstance(result, ParseFailure) and result.error_type == "validation_error"
        return
    assert isinstance(result, ParsedTransaction), result
    assert result.transaction == reference
    assert result.unknown_fields == tuple(sorted(k for k in event if k not in known))


def test_escaped_field_names_are_read_on_the_tolerant_path() -> None:
    raw = json.dumps({**VALID, "extra": 1}).encode().replace(b'"amount"', b'"amo\\u0075nt"')
    assert b"\\u0075" in raw
    result = parse_transaction(raw)
    assert isinstance(result, ParsedTransaction) and result.unknown_fields == ("extra",)
    assert result.transaction.amount == Decimal(str(VALID["amount"]))
